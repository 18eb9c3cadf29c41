# One run of the workflow: the EM loop of one config (results/<run>/). The Snakefile includes it
# for a single run (`snakemake --cores 2 round3`); a study (rules/study.smk) instantiates it once
# per run of its sheet as a Snakemake module with that run's merged config.

from conta_core.infra.config import ConfigError, check_config, validate_schema

try:  # the project's own checks ("config key classifier.batch_size: ..."), not Snakemake's validator
    validate_schema(config)
    check_config(config)
except ConfigError as e:
    raise WorkflowError(str(e))


# Constants (R, T, SHARDS, ...) and helper functions; the rule files hold only rules.
include: "common.smk"


# Light bookkeeping jobs run in the main Snakemake process, never as cluster jobs. (A call, not
# the `localrules:` directive: a study's module instance renames its rules, the directive would not.)
workflow.localrules(
    *map(
        workflow.modifier.modify_rulename,
        [
            "all",
            "round0_pseudo",
            "round_summary",
            "summary",
            "figure_miou",
            "figure_cam_sweep",
            "figure_train_loss",
            "figure_confounder",
            "table_per_class_iou",
            "table_summary",
        ],
    ),
)


wildcard_constraints:
    t=r"\d+",
    shard=r"\d+",
    split=r"train|val",


include: "data.smk"
include: "classify.smk"
include: "pseudo_mask.smk"
include: "segment.smk"
include: "confounder.smk"
include: "report.smk"
include: "visualize.smk"
include: "amn.smk"
include: "seam.smk"


rule all:
    default_target: True
    input:
        L.summary(),
        *figure_files(T),


rule round0_pseudo:
    input:
        [L.eval_csv(0, "cam"), L.eval_csv(0, "pseudo_mask")]
        if HAS_GT
        else L.shard_dirs(0, "pseudo_mask", SHARDS),


for _t in range(T + 1):

    rule:
        name:
            f"round{_t}"
        input:
            L.summary(_t),
            *figure_files(_t),
