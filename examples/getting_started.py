import hmq

# Define a costly function as a task
@hmq.task
def costly_calculation(arg1, arg2):
    # Simulate expensive computation
    result = arg1 * arg2  # Replace with actual logic
    return result

# Example dataset
big_dataset = [(2, 3), (4, 5), (6, 7)]

# Queue multiple jobs
for case in big_dataset:
    costly_calculation(*case)

# Submit all queued tasks
tag = costly_calculation.submit()

import time

# Wait until all tasks are completed
while True:
    remaining_jobs = tag.pull()
    if remaining_jobs == 0:
        break
    time.sleep(10)  # Check again after a short delay

print("Results:", list(tag.results))
print("Errors:", list(tag.errors))
