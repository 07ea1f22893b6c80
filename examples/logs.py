import hmq

@hmq.task
def noisy(x):
    import sys

    print("working on", x)
    print("a warning about", x, file=sys.stderr)
    return x * 2

noisy(1)
noisy(2)
tag = noisy.submit()
tag.pull(blocking=True)
for output in tag.logs:
    print(output, end="")
