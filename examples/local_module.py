import hmq

import foobar
import cloudpickle
cloudpickle.register_pickle_by_value(foobar)

@hmq.task
def task(x):
    return foobar.triple(x)

task(14)
tag = task.submit()
tag.pull(blocking=True)
print(list(tag.results))  # [42]
