# A study: every run of a sheet in one DAG (`--config study=studies/<name>/study.yaml`, target
# `study`). conta_core.infra.study loads and checks the study file and its sheet (a bad row fails
# here, before any job); each unfinished run, and the base run (rounds 0) of each (replicate,
# seed) with an unfinished run, is an instance of the single-run workflow rules/run.smk as a
# Snakemake module with its merged config, its rules prefixed `<run>_` (`base_r<K>_s<S>_`).
# The runs of a (replicate, seed) read data/, pretrain/ and round 0 from their base run's
# folder (config shared_prefix, conta_core.infra.layout), so those are built once per seed.
#
# [OURS] The modules are declared with workflow.module / workflow.userule, the calls Snakemake
# compiles a `module` and a `use rule * from M as M_*` statement into, because their names
# come from the sheet. A run instance excludes the rules whose outputs lie under the base
# (prepare_data, pretrain): only the base instance produces them, no rule is ambiguous.
# The profile's per-rule settings (set-threads, set-resources: `train_cls`, ...) are copied
# to the prefixed rule names, so `--profile profiles/slurm` sizes a study's jobs as a run's.

import json
import os

from conta_core.infra.config import ConfigError
from conta_core.infra.study import ANALYSIS_DIR, load_study, workflow_commit

try:
    STUDY = load_study(config["study"], config)
    # a study with `commit`: its runs come from that commit (checked where the DAG is planned,
    # not again inside a job on a node, which may lack git)
    if workflow.is_main_process:
        STUDY.check_commit(workflow.basedir)
except ConfigError as e:
    raise WorkflowError(str(e))

RUN_SNAKEFILE = os.path.join(workflow.basedir, "rules", "run.smk")
# the measures files' `commit` column, read where the local rule study_measures runs (not
# again at every job's start on a node)
STUDY_COMMIT = (
    workflow_commit(workflow.basedir) if workflow.is_main_process else "unknown"
)
SHARED_RULES = ["prepare_data", "pretrain"]  # outputs under the base run's folder
STUDY_PENDING = STUDY.pending_runs()
STUDY_INSTANCES = [(name, cfg, []) for name, cfg in STUDY.pending_bases().items()] + [
    (r.name, r.config, SHARED_RULES) for r in STUDY_PENDING
]


# The profile's set-threads / set-resources of rule X also for <prefix>_X.
for _table in (
    workflow.resource_settings._parsed_overwrite_threads,
    workflow.resource_settings._parsed_overwrite_resources,
):
    for _rule in list(_table):
        for _name, _, _ in STUDY_INSTANCES:
            _table.setdefault(f"{_name}_{_rule}", _table[_rule])

for _name, _cfg, _exclude in STUDY_INSTANCES:
    _before = {r.name for r in workflow.rules}
    workflow.module(_name, snakefile=RUN_SNAKEFILE, config=_cfg)
    workflow.userule(
        rules=["*"],
        from_module=_name,
        exclude_rules=_exclude or None,
        name_modifier=f"{_name}_*",
    )(lambda: None)
    # unit by unit, the `order` tiers first, then the other conditions (Study.priority)
    _priority = STUDY.priority(_name)
    for _rule in workflow.rules:
        if _rule.name not in _before:
            _rule.priority = _priority


localrules:
    study,
    study_measures,
    study_analysis,
    study_interim_analysis,
    study_interim,


rule study:
    input:
        STUDY.analysis_file("pairs.csv"),
        STUDY.analysis_file("pairs.md"),
        STUDY.analysis_file("differences.png"),
        STUDY.analysis_file("conditions.md"),


# One small CSV per finished run (its summary rows, one per round), meant to be committed:
# a run with this file is not instantiated again (conta_core.infra.study).
rule study_measures:
    input:
        summary=lambda w: f"{STUDY.run_dir(w.run)}/summary.csv",
    output:
        out=STUDY.measures_file("{run}"),
    log:
        f"{STUDY.results_dir}/logs/study_measures/{{run}}.log",
    wildcard_constraints:
        run="|".join(r.name for r in STUDY_PENDING) or "^$",
    conda:
        "../envs/conta.yaml"
    params:
        condition=lambda w: STUDY_RUNS[w.run].condition,
        seed=lambda w: STUDY_RUNS[w.run].seed,
        replicate=lambda w: STUDY_RUNS[w.run].replicate,
        commit=STUDY_COMMIT,
    script:
        "../workflow_scripts/study_measures.py"


STUDY_RUNS = {r.name: r for r in STUDY.runs}


rule study_analysis:
    input:
        measures=[STUDY.measures_file(r.name) for r in STUDY.runs],
    output:
        out_csv=report(
            STUDY.analysis_file("pairs.csv"),
            caption="../report/study.rst",
            category="Study",
            labels={"table": "paired differences"},
        ),
        out_md=STUDY.analysis_file("pairs.md"),
        out_conditions_csv=STUDY.analysis_file("conditions.csv"),
        out_conditions_md=STUDY.analysis_file("conditions.md"),
        out_png=report(
            STUDY.analysis_file("differences.png"),
            caption="../report/study.rst",
            category="Study",
            labels={"figure": "differences per round"},
        ),
    log:
        f"{STUDY.results_dir}/logs/study_analysis.log",
    conda:
        "../envs/conta.yaml"
    params:
        cfg=json.dumps(
            {
                "pairs": STUDY.pairs,
                "primary_pairs": STUDY.primary_pairs,
                "decision": STUDY.decision,
                "measures": STUDY.measures,
                "power": STUDY.power,
                "rounds": STUDY.rounds,
            },
            sort_keys=True,
        ),
    script:
        "../workflow_scripts/study_analysis.py"


# The same analysis over the runs finished so far (a study that spans sessions or is cut short
# by its budget): pairs use the units where both conditions have finished. Rerun whenever a
# measures file is added (Snakemake's input-set trigger). Target `study_interim`.
rule study_interim_analysis:
    input:
        measures=lambda w: STUDY.finished_measures(),
    output:
        out_csv=STUDY.analysis_file("interim/pairs.csv"),
        out_md=STUDY.analysis_file("interim/pairs.md"),
        out_conditions_csv=STUDY.analysis_file("interim/conditions.csv"),
        out_conditions_md=STUDY.analysis_file("interim/conditions.md"),
        out_png=STUDY.analysis_file("interim/differences.png"),
    log:
        f"{STUDY.results_dir}/logs/study_interim_analysis.log",
    conda:
        "../envs/conta.yaml"
    params:
        cfg=rules.study_analysis.params.cfg,
    script:
        "../workflow_scripts/study_analysis.py"


rule study_interim:
    input:
        rules.study_interim_analysis.output,
