"""Entry point of worker processes: ``python -m zray.core NODE_ADDRESS WORKER_ID``."""
from .worker import main

main()
