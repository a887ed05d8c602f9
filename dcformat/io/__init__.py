"""Files on disk: the one atomic replace, the user-facing save/load/open verbs, sharded
models and their index. Built on ``dcformat.format``; nothing here knows an encoding."""
