# The commands of the README: `make demo` (the main job), `make test` (the suite on the newest
# supported stack, .venv) and `make test-oldest` (on the oldest one, .venv-oldest, the tests whose
# behaviour depends on the versions: tests/conftest.py); `make test-clients` the tests of the
# clients extra (.venv-clients); `make test-all` runs them all, as CI does; `make test-quick` is
# the edit-test loop (the linter, then no tool runs or trainings); `make lint` is the linter
# alone. Each first runs tools/setup_env.sh, which creates the environment and installs its pinned
# stack on a fresh machine and returns in a second when everything is already there.
PY := .venv/bin/python
# Two pytest-xdist workers: the suite's waits (Slurm, timeouts, process starts) overlap with
# computing; tests that share an expensive fixture are one xdist_group (tests/conftest.py).
PYTEST := -m pytest -n 2 --dist loadgroup --durations=30 tests

.PHONY: env env-oldest lint test test-quick test-oldest test-all coverage demo demo-seg demo-cls compare test-clients
env:
	@tools/setup_env.sh

env-oldest:
	@tools/setup_env.sh oldest

# pyflakes and pycodestyle at the project's line width (ruff.toml); part of test-quick and test-all
lint: env
	.venv/bin/ruff check .

test: env
	$(PY) $(PYTEST)

test-quick: lint
	$(PY) -m pytest -n 2 -m "not slow" tests

test-oldest: env-oldest
	.venv-oldest/bin/python $(PYTEST) --oldest-stack

# The tests that need the clients extra (Hugging Face transformers, which mmpretrain 1.2.0 cannot be
# imported beside): in .venv-clients, .venv without mmpretrain (tools/setup_env.sh clients).
test-clients: env
	@tools/setup_env.sh clients
	.venv-clients/bin/python -c "import transformers, scipy"  # the tests skip without them
	.venv-clients/bin/python -m pytest -m clients tests/test_clients.py tests/test_docs.py

test-all: lint test test-clients test-oldest

# Line coverage of convmlp_mm/ over the whole suite on the newest stack, the tools it starts
# included (setup.cfg's [coverage:run]).
coverage: env
	rm -rf .coverage-data
	$(PY) -m coverage run -m pytest -n 2 --dist loadgroup tests
	$(PY) -m coverage combine -q
	$(PY) -m coverage report

# The main job: Mask R-CNN with ConvMLP-S, trained from scratch on the generated shapes data
# (data/shapes), evaluated with the COCO metric on the held-out split, with pictures in
# work_dirs/demo. `--resume` continues an interrupted run and skips a finished one.
DEMO := configs/quickstart/mask-rcnn_convmlp-s_shapes.py
DEMO_SEG := configs/quickstart/fpn_convmlp-s_shapes.py
VAL_IMAGES := $(foreach i,0 1 2 3 4 5 6 7,data/shapes/coco/val/val_0000$(i).jpg)

demo: env
	$(PY) tools/make_shapes.py
	$(PY) tools/train.py $(DEMO) --work-dir work_dirs/demo --resume
	$(PY) tools/test.py $(DEMO) $$(cat work_dirs/demo/last_checkpoint) --work-dir work_dirs/demo
	$(PY) tools/infer.py $(DEMO) $$(cat work_dirs/demo/last_checkpoint) $(VAL_IMAGES) --out-dir work_dirs/demo/predictions \
		--score-thr 0.5 --montage work_dirs/demo/predictions.png
	$(PY) tools/visualize_features.py $(DEMO) $$(cat work_dirs/demo/last_checkpoint) $(word 1,$(VAL_IMAGES)) \
		--out work_dirs/demo/features.png
	@echo "pictures: work_dirs/demo/predictions.png (and predictions/*.png), work_dirs/demo/features.png"

demo-seg: env
	$(PY) tools/make_shapes.py
	$(PY) tools/train.py $(DEMO_SEG) --work-dir work_dirs/demo-seg --resume
	$(PY) tools/test.py $(DEMO_SEG) $$(cat work_dirs/demo-seg/last_checkpoint) --work-dir work_dirs/demo-seg
	$(PY) tools/infer.py $(DEMO_SEG) $$(cat work_dirs/demo-seg/last_checkpoint) \
		$(subst coco/val/,ade/images/validation/,$(VAL_IMAGES)) --out-dir work_dirs/demo-seg/predictions \
		--montage work_dirs/demo-seg/predictions.png
	$(PY) tools/visualize_features.py $(DEMO_SEG) $$(cat work_dirs/demo-seg/last_checkpoint) \
		data/shapes/ade/images/validation/val_00000.jpg --out work_dirs/demo-seg/features.png
	@echo "pictures: work_dirs/demo-seg/predictions.png (and predictions/*.png), work_dirs/demo-seg/features.png"

# Classification: ConvMLP-S trained from scratch on generated single-shape images, held-out
# top-1, a grid of predictions and saliency maps (the paper's Appendix A) in work_dirs/demo-cls.
DEMO_CLS := configs/quickstart/convmlp-s_shapes-cls.py
CLS_IMAGES := $(shell sed -n '1,8s/ .*//p' data/shapes_cls/meta/val.txt 2>/dev/null)

demo-cls: env
	$(PY) tools/make_shapes.py --classification
	$(PY) tools/train.py $(DEMO_CLS) --work-dir work_dirs/demo-cls --resume
	$(PY) tools/test.py $(DEMO_CLS) $$(cat work_dirs/demo-cls/last_checkpoint) --work-dir work_dirs/demo-cls
	$(MAKE) --no-print-directory demo-cls-pictures

demo-cls-pictures:
	$(PY) tools/infer.py $(DEMO_CLS) $$(cat work_dirs/demo-cls/last_checkpoint) $(addprefix data/shapes_cls/val/,$(CLS_IMAGES)) \
		--out-dir work_dirs/demo-cls/predictions --montage work_dirs/demo-cls/predictions.png
	$(PY) tools/visualize_saliency.py $(DEMO_CLS) $$(cat work_dirs/demo-cls/last_checkpoint) \
		$(addprefix data/shapes_cls/val/,$(wordlist 1,4,$(CLS_IMAGES))) --out work_dirs/demo-cls/saliency.png
	@echo "pictures: work_dirs/demo-cls/predictions.png (and predictions/*.png), work_dirs/demo-cls/saliency.png"

# The paper's comparison on the quickstart data: RetinaNet, Mask R-CNN and Semantic FPN, each with
# ConvMLP-S, Pure-MLP-S and the host's ResNet-18 (all from scratch, one recipe per system: the
# ConvMLP-S quickstart's), then their table (Markdown, CSV) and figure in work_dirs/compare. A run
# that has evaluated (the quickstarts evaluate at their end only) is skipped; one stopped by
# SIGTERM resumes from the checkpoint it wrote then; any other starts again.
COMPARE_RUNS := $(foreach s,retinanet mask-rcnn fpn,$(foreach b,convmlp-s puremlp-s r18,$(s)_$(b)_shapes))

compare: env
	$(PY) tools/make_shapes.py
	@for run in $(COMPARE_RUNS); do \
		if grep -qs -e '"mIoU"' -e '"coco/bbox_mAP"' work_dirs/compare/$$run/*/vis_data/scalars.json; then \
			echo "== $$run: evaluated, skipped"; continue; \
		fi; \
		echo "== $$run"; \
		$(PY) tools/train.py configs/quickstart/$$run.py --work-dir work_dirs/compare/$$run --resume || exit 1; \
	done
	$(PY) tools/analysis/compare_backbones.py $(addprefix work_dirs/compare/,$(COMPARE_RUNS)) --out-dir work_dirs/compare
