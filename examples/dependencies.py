import hmq

def subset(number: int) -> int:
    return number * 2

@hmq.task
def task(up_to: int) -> int:
    return sum(subset(_) for _ in range(up_to))

task(10)
tag = task.submit()
tag.pull(blocking=True)
print(list(tag.results))  # [90]
