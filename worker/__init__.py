"""RQ worker of the neural-entropy service: job functions (`worker.jobs.run_job`) and the entry
point (`python -m worker`). It loads inputs from the database and the artifact store, calls the
science in `models/`, and writes progress, checkpoints, measurements and curves back.

The parent worker process never initialises CUDA (so forking work horses stays safe); the device
is chosen inside each work horse.
"""
