# conta-pipeline: CONTA (Context Adjustment, NeurIPS 2020) as a Snakemake workflow.
#
#   snakemake --cores 2 round3                      # whole EM loop, default config (CPU)
#   snakemake --cores 8 --resources gpu=8 round3    # one 8-GPU box
#   snakemake --profile profiles/slurm round3       # SLURM
#   snakemake --configfile config/voc12.yaml ...    # another dataset (overlay on config.yaml)
#
# Targets: round0 .. round<T> (T = config `rounds`), round0_pseudo, all.
# Every rule is one EM step; its thin script in workflow_scripts/ calls conta_core.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


validate(config, f"{workflow.basedir}/config/schema.yaml")

from conta_core.infra.config import ConfigError, check_config  # noqa: E402

try:
    check_config(config)
except ConfigError as e:
    raise WorkflowError(str(e))


# Constants (R, T, SHARDS, ...) and helper functions; the rule files hold only rules.
include: "rules/common.smk"


# Light bookkeeping jobs run in the main Snakemake process, never as cluster jobs.
localrules:
    all,
    round0_pseudo,
    round_summary,
    summary,
    figure_miou,
    figure_cam_sweep,
    figure_train_loss,
    figure_confounder,
    table_per_class_iou,
    table_summary,


wildcard_constraints:
    t=r"\d+",
    shard=r"\d+",
    split=r"train|val",


include: "rules/data.smk"
include: "rules/classify.smk"
include: "rules/pseudo_mask.smk"
include: "rules/segment.smk"
include: "rules/confounder.smk"
include: "rules/report.smk"
include: "rules/visualize.smk"
include: "rules/amn.smk"
include: "rules/seam.smk"


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
