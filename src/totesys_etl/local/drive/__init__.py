"""The drivers that play AWS's part: the schedule and the queues (`tick`, `notifications`), the
demo, and the progress lines of the long local commands."""
