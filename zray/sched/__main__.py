from .node import main

main()
