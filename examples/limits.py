import hmq

@hmq.task
def simulate(steps: int) -> int:
    return sum(range(steps))

for steps in (10, 100, 1000):
    simulate(steps)

# each call: at most 10 minutes and 1 GiB; a call that fails runs up to twice more
tag = simulate.submit(timeout=600, memory="1GiB", retries=2)
tag.pull(blocking=True)
print(list(tag.results))  # [45, 4950, 499500]
