# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create/update .venv with pinned versions; re-running is fast when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := requirements/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv test lint demo clean

$(STAMP): setup.py $(CONSTRAINTS) robot_compress/ros/vision_msgs_build.py $(wildcard interfaces/vision_msgs/*.* interfaces/vision_msgs/msg/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[compress,ros,dev,sim,msgbuild]'
	# The tests' real Triton: only its bundled tritonserver is used; its metadata's numpy<2 pin would
	# block the install, so no dependencies (tests/triton/conftest.py).
	$(BIN)/pip install -q --no-deps -c $(CONSTRAINTS) nvidia-pytriton
	# vision_msgs (no wheel on the registry): compiled in build/vision_msgs and installed into the venv
	# like a ROS wheel; without cmake or a compiler it says so and the nodes publish JSON instead.
	$(BIN)/python -m robot_compress.ros.vision_msgs_build
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest

# The simulated TurtleBot3 patrolling past COCO picture boards, with the shipped detectors on both
# backends; `make demo DEMO_ARGS=` runs the classification demo on CIFAR-10 images instead.
DEMO_ARGS ?= --world turtlebot3 --task detection

demo: $(STAMP)
	$(BIN)/robot-compress demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
