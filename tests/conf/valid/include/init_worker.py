# init_worker_by_python_file for full.conf.
WORKER_READY = True
