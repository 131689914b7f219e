"""The run folder and the storage prefix: everything that names, reads, writes or locks them.

`layout` names every file, `io` writes them (atomic, durable; damaged files set aside), `state`
answers what a folder holds (configuration, finished trials), `key` and `record` are the typed
config key and trial record, `lock` keeps one writer per folder, `manifest` records where a run
ran, `storage` reaches a local folder or an object store.

Rule: nothing here imports training (torch) or execution (Ray, MLflow), so the report and the CI
gate read run folders without either; tests/test_house.py checks it.
"""
