"""The reference set's on-disk contract (SPEC §3), in one home that every layer which writes or reads one imports.

    schema    paths, Arrow schemas, versions, ids            storage   fsspec I/O (local, gs://), atomic writes
    staging   the index job's resumable staging area          manifest  manifest.json, counted from the files
    reader    ReferenceSet: open, labels, embeddings          index     FAISS: plan, build, tune, load, search

It imports nothing above `models`, so the Beam transforms, the jobs and the labeller all stand on it.
"""
