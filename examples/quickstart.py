"""A first zray program: tasks, objects and an actor on this machine."""
import time

import numpy as np

import zray as ray

start = time.time()
ray.init()


@ray.remote
def square(x):
    return x * x


@ray.remote
def total(values):
    return sum(values)


@ray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value


squares = [square.remote(i) for i in range(10)]
print("squares:", ray.get(squares))
print("sum of squares:", ray.get(total.remote(ray.get(squares))))

array_ref = ray.put(np.ones(1_000_000))
print("array sum, computed in a worker:", ray.get(square.remote(array_ref)).sum())

counter = Counter.remote()
print("counter:", ray.get([counter.increment.remote() for _ in range(5)]))
print(f"done in {time.time() - start:.2f} s")
ray.shutdown()
