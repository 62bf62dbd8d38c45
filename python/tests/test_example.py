"""The serving-scheduler example runs end to end and leaves the pool whole."""
import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "serving_scheduler.py"


def test_serving_scheduler_example():
    spec = importlib.util.spec_from_file_location("serving_scheduler", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(steps=120, pool_pages=512, seed=3)  # asserts the pool is whole at the end
