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
# retrieval data in the UserBehavior format, small so that `make all` stays in minutes on a laptop;
# `make retrieval tdm UB_USERS=20000 UB_ITEMS=200000 UB_STEPS=0` trains full epochs on more
UB_USERS      ?= 2000
UB_ITEMS      ?= 10000
UB_CATEGORIES ?= 200
UB_TEST       ?= 200
UB_STEPS      ?= 300
UB            := $(OUT)/ub
SEQ           := $(UB)/seq
# pair scorers (NANN, TDM) score ~100 candidates per row: bounded steps keep `make all` short
STEPS         := $(if $(filter 0,$(UB_STEPS)),,--set train.max_steps=$(UB_STEPS))
# TDM negatives per level, root first: 1 at the top, growing to 8, never more than a level holds
LAYER_SAMPLES := import json,sys; s=json.load(open(sys.argv[1]+"/_meta.json"))["level_sizes"]; \
                 print([0]+[min(1+l//2, 8, n-1) for l, n in enumerate(s) if l])

.PHONY: all install pipeline retrieval tdm test bench lint clean

all: pipeline retrieval tdm

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

# next-item samples (TDM/JTM user split) shared by the retrieval targets
$(SEQ)/_meta.json: $(STAMP)
	set -e; \
	raw=$$($(RT) synth --dataset userbehavior --output $(UB)/raw --users $(UB_USERS) --items $(UB_ITEMS) \
	        --categories $(UB_CATEGORIES) --overwrite); \
	events=$$($(RT) convert --format userbehavior "$$raw/UserBehavior.csv" --output $(UB)/events --overwrite); \
	$(RT) dataset --task next-item --events "$$events" --protocol user-split --n-test $(UB_TEST) \
	        --n-valid $(UB_TEST) --output $(SEQ) --overwrite >/dev/null

# retrieval: baselines, two-tower + HNSW, NANN over the HNSW graph, each against exact search
retrieval: $(SEQ)/_meta.json
	set -e; \
	ev() { $(RT) eval-topk --recall-path "$$1" --truth-path $(SEQ)/test/truth --items $(SEQ)/items \
	        --k-list 20,50,200 --output $(UB)/eval/$$2 --overwrite $${3:+--brute-path "$$3"} >/dev/null; }; \
	for rule in popularity item-cf; do \
	  r=$$($(RT) baseline --rule $$rule --train $(SEQ)/train_sequences --history $(SEQ)/test/inputs \
	        --users $(SEQ)/test/truth --k 200 --output $(UB)/recalls/$$rule --overwrite); \
	  ev "$$r" $$rule; \
	done; \
	: "two-tower: user vectors searched in an HNSW index of the item tower's vectors"; \
	rm -rf $(UB)/models/two_tower; \
	m=$$($(RT) train --config examples/two_tower_userbehavior.yaml --set data.train_input=$(SEQ)/train \
	        --set train.epochs=1 --set train.model_dir=$(UB)/models/two_tower); \
	ex=$$($(RT) export --model-dir "$$m" --export-dir $(UB)/models/two_tower_export --overwrite); \
	emb=$$($(RT) embed --model "$$ex" --items $(SEQ)/items --output $(UB)/emb/two_tower --overwrite); \
	idx=$$($(RT) hnsw build --input "$$emb" --output $(UB)/index/two_tower --overwrite); \
	r=$$($(RT) retrieve --method hnsw --model "$$ex" --index "$$idx" --users $(SEQ)/test/inputs --topk 200 \
	        --output $(UB)/recalls/two_tower --overwrite); \
	b=$$($(RT) retrieve --method brute --model "$$ex" --items "$$emb" --users $(SEQ)/test/inputs --topk 200 \
	        --output $(UB)/recalls/two_tower_brute --overwrite); \
	ev "$$r" two_tower "$$b"; \
	: "NANN: the model scores every candidate visited on the HNSW graph of its own item embeddings"; \
	rm -rf $(UB)/models/nann; \
	m=$$($(RT) train --config examples/nann_userbehavior.yaml --set data.train_input=$(SEQ)/train \
	        --set data.eval_input=$(SEQ)/train $(STEPS) --set train.model_dir=$(UB)/models/nann); \
	ex=$$($(RT) export --model-dir "$$m" --export-dir $(UB)/models/nann_export --overwrite); \
	emb=$$($(RT) embed --model "$$ex" --items $(SEQ)/items --output $(UB)/emb/nann --overwrite); \
	idx=$$($(RT) hnsw build --input "$$emb" --space l2 --output $(UB)/index/nann --overwrite); \
	: "best-first expansion (4 nodes per user and round) until the lists converge"; \
	r=$$($(RT) retrieve --method nann --model "$$ex" --index "$$idx" --users $(SEQ)/test/inputs --topk 200 \
	        --ef 100,200,400 --rounds 1,100,1000 --expand 4 --output $(UB)/recalls/nann --overwrite); \
	b=$$($(RT) retrieve --method brute --model "$$ex" --items $(SEQ)/items --users $(SEQ)/test/inputs \
	        --topk 200 --output $(UB)/recalls/nann_brute --overwrite); \
	ev "$$r" nann "$$b"; \
	echo "retrieval done: metrics in $(UB)/eval/{popularity,item-cf,two_tower,nann}/metrics.csv" >&2

# TDM: initial tree -> train -> item embeddings -> learnt tree -> retrain -> beam search -> evaluate
tdm: $(SEQ)/_meta.json
	set -e; \
	tdm_train() { rm -rf $(UB)/models/$$1; \
	  $(RT) train --config examples/tdm_userbehavior.yaml --set data.train_input=$(SEQ)/train \
	        --set data.eval_input=$(SEQ)/train --set model.tree="$$2" --set eval.max_rows=5000 \
	        --set "model.layer_num_sample=$$($(BIN)/python -c '$(LAYER_SAMPLES)' "$$2")" $(STEPS) \
	        --set train.model_dir=$(UB)/models/$$1; }; \
	tree=$$($(RT) tree init --item-input-path $(SEQ)/items --item-id-field item_id --cate-id-field category_id \
	        --tree-output-dir $(UB)/tree_init --overwrite); \
	m=$$(tdm_train tdm_init "$$tree"); \
	ex=$$($(RT) export --model-dir "$$m" --export-dir $(UB)/models/tdm_init_export --overwrite); \
	emb=$$($(RT) embed --model "$$ex" --items $(SEQ)/items --output $(UB)/emb/tdm_init --overwrite); \
	tree=$$($(RT) tree cluster --item-input-path "$$emb" --item-id-field item_id --embedding-field item_emb \
	        --tree-output-dir $(UB)/tree_learnt --overwrite); \
	m=$$(tdm_train tdm "$$tree"); \
	ex=$$($(RT) export --model-dir "$$m" --export-dir $(UB)/models/tdm_export --overwrite); \
	r=$$($(RT) retrieve --method tdm --model "$$ex" --tree "$$tree" --users $(SEQ)/test/inputs --topk 200 \
	        --output $(UB)/recalls/tdm --overwrite); \
	b=$$($(RT) retrieve --method brute --model "$$ex" --tree "$$tree" --users $(SEQ)/test/inputs --topk 200 \
	        --output $(UB)/recalls/tdm_brute --overwrite); \
	$(RT) eval-topk --recall-path "$$r" --truth-path $(SEQ)/test/truth --items $(SEQ)/items --k-list 20,50,200 \
	        --brute-path "$$b" --output $(UB)/eval/tdm --overwrite >/dev/null; \
	echo "tdm done: metrics in $(UB)/eval/tdm/metrics.csv" >&2

test: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check rectool tests bench

clean:
	rm -rf $(OUT) $(VENV) .pytest_cache .ruff_cache
