"""`make bench`: the contract §8 figures (`run`), each stage in a process of its own (`stage`), the
bench's scratch databases and buckets (`scratch`) and the two baselines (`baselines`).

Only the bench needs pandas and awswrangler: `pip install -e .[bench]`.
"""
