"""bench/gpu_fit.py in parts: seed files, the analytic estimate, the worker (one run), the plan (which runs)."""
