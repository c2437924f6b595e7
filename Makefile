# rectool: `make all` sets up .venv and runs the whole pipeline on the built-in data;
# `make test` sets up .venv and runs the tests. Both start from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RT     := $(BIN)/rectool
OUT    ?= out
STAMP  := $(VENV)/.installed-stamp
# default data: 3000 users (~3.5M log rows); `make all USERS=20000 ITEMS=4758484 ...` for full scale
USERS      ?= 3000
ITEMS      ?= 300000
CATEGORIES ?= 2000
# the log runs 2014-11-18..12-18; models learn from ten label days and predict the day after
LABEL_DAYS  ?= 2014-12-09,2014-12-10,2014-12-11,2014-12-12,2014-12-13,2014-12-14,2014-12-15,2014-12-16,2014-12-17,2014-12-18
PREDICT_DAY ?= 2014-12-19

.PHONY: all install pipeline test bench lint clean

all: pipeline

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: on these machines it is the local CPU wheel; nothing may pull a newer torch
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The pipeline is a shell chain: every command prints the path it wrote on stdout.
pipeline: $(STAMP)
	set -e; \
	raw=$$($(RT) synth --dataset tianchi --output $(OUT)/raw/tianchi --users $(USERS) --items $(ITEMS) \
	        --categories $(CATEGORIES) --overwrite); \
	events=$$($(RT) convert --format tianchi-user "$$raw/offline/tianchi_fresh_comp_train_user.csv" \
	        --output $(OUT)/events --overwrite); \
	items=$$($(RT) convert --format tianchi-item "$$raw/offline/tianchi_fresh_comp_train_item.csv" \
	        --output $(OUT)/items --overwrite); \
	: "ranking: features for every label day and the target day; the last label day is the eval day"; \
	feats=$$($(RT) features --events "$$events" --items "$$items" --cutoffs $(LABEL_DAYS),$(PREDICT_DAY) \
	        --output $(OUT)/features --overwrite); \
	samples=$$($(RT) dataset --events "$$events" --features "$$feats" --items "$$items" --label-days $(LABEL_DAYS) \
	        --predict-day $(PREDICT_DAY) --output $(OUT)/samples --overwrite); \
	: "the rule floor and the model, scored on the same eval day"; \
	for rule in cart-last-day weighted-recency; do \
	  pe=$$($(RT) baseline --samples "$$samples/eval" --rule $$rule --output $(OUT)/pred/$$rule-eval --overwrite); \
	  $(RT) eval-f1 --pred-path "$$pe" --label-path "$$samples/eval" --max-per-user 1,2 \
	        --output $(OUT)/eval/$$rule-eval --overwrite >/dev/null; \
	done; \
	rm -rf $(OUT)/models/deepfm; \
	model=$$($(RT) train --config examples/deepfm_tianchi.yaml --set data.train_input="$$samples/train" \
	        --set data.eval_input="$$samples/eval" --set train.model_dir=$(OUT)/models/deepfm); \
	export=$$($(RT) export --model-dir "$$model" --export-dir $(OUT)/models/deepfm_export --overwrite); \
	pm=$$($(RT) predict --model "$$export" --input "$$samples/eval" --output $(OUT)/pred/deepfm-eval \
	        --reserved-columns user_id,item_id,label_day --overwrite); \
	$(RT) eval-f1 --pred-path "$$pm" --label-path "$$samples/eval" --output $(OUT)/eval/deepfm-eval --overwrite >/dev/null; \
	: "the hidden target day: synth's truth file scores the rule and the model honestly"; \
	pr=$$($(RT) baseline --samples "$$samples/predict" --rule cart-last-day --output $(OUT)/pred/cart-last-day-predict \
	        --overwrite); \
	$(RT) eval-f1 --pred-path "$$pr" --label-path "$$raw/truth/next_day_purchases.csv" \
	        --output $(OUT)/eval/cart-last-day-predict --overwrite >/dev/null; \
	pp=$$($(RT) predict --model "$$export" --input "$$samples/predict" --output $(OUT)/pred/deepfm-predict \
	        --reserved-columns user_id,item_id,label_day --overwrite); \
	f1=$$($(RT) eval-f1 --pred-path "$$pp" --label-path "$$raw/truth/next_day_purchases.csv" \
	        --output $(OUT)/eval/deepfm-predict --overwrite); \
	: "the honest target-day F1: the top-K chosen on the eval day, for the rule and the model"; \
	$(RT) eval-f1 --pred-path "$$pr" --label-path "$$raw/truth/next_day_purchases.csv" \
	        --settings-from $(OUT)/eval/cart-last-day-eval --output $(OUT)/eval/cart-last-day-submitted --overwrite \
	        >/dev/null; \
	$(RT) eval-f1 --pred-path "$$pp" --label-path "$$raw/truth/next_day_purchases.csv" \
	        --settings-from $(OUT)/eval/deepfm-eval --output $(OUT)/eval/deepfm-submitted --overwrite >/dev/null; \
	: "submit with the cut-off that was best on the eval day"; \
	sub=$$($(RT) submit --pred-path "$$pp" --item-subset-path "$$items" --settings-from $(OUT)/eval/deepfm-eval \
	        --output $(OUT)/submission.tsv --overwrite); \
	echo "pipeline done: events=$$events items=$$items features=$$feats samples=$$samples model=$$model" >&2; \
	echo "  target-day F1 scan: $$f1; submission: $$sub" >&2

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check rectool tests bench

clean:
	rm -rf $(OUT) $(VENV) .pytest_cache .ruff_cache
