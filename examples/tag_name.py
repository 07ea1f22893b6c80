import hmq

@hmq.task
def test():
    return 42

for i in range(10):
    test()
test.submit(tag="myname")
