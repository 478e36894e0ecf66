"""dynacppo_lite."""
