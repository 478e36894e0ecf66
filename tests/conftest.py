import os

# Headless MuJoCo rendering through Mesa's EGL; must be set before mujoco is imported.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
