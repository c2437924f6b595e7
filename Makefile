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
	: "ranking: cut-offs, label days and the predict day default to the log's last two days and the day after"; \
	feats=$$($(RT) features --events "$$events" --items "$$items" --output $(OUT)/features --overwrite); \
	samples=$$($(RT) dataset --events "$$events" --features "$$feats" --items "$$items" --neg-ratio 20 \
	        --output $(OUT)/samples --overwrite); \
	for rule in cart-last-day weighted-recency; do \
	  pe=$$($(RT) baseline --samples "$$samples/eval" --rule $$rule --output $(OUT)/pred/$$rule-eval --overwrite); \
	  $(RT) eval-f1 --pred-path "$$pe" --label-path "$$samples/eval" --max-per-user 1,2 \
	        --output $(OUT)/eval/$$rule-eval --overwrite >/dev/null; \
	done; \
	pred=$$($(RT) baseline --samples "$$samples/predict" --rule cart-last-day --output $(OUT)/pred/cart-last-day-predict \
	        --overwrite); \
	: "the hidden target day: synth's truth file scores the predictions honestly"; \
	f1=$$($(RT) eval-f1 --pred-path "$$pred" --label-path "$$raw/truth/next_day_purchases.csv" \
	        --output $(OUT)/eval/cart-last-day-predict --overwrite); \
	sub=$$($(RT) submit --pred-path "$$pred" --item-subset-path "$$items" --output $(OUT)/submission.tsv --overwrite); \
	echo "pipeline done: events=$$events items=$$items features=$$feats samples=$$samples" >&2; \
	echo "  target-day F1 scan: $$f1; submission: $$sub" >&2

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check rectool tests bench

clean:
	rm -rf $(OUT) $(VENV) .pytest_cache .ruff_cache
