# conta-pipeline: CONTA (Context Adjustment, NeurIPS 2020) as a Snakemake workflow.
#
#   snakemake --cores 2 round3                      # whole EM loop, default config (CPU)
#   snakemake --cores 8 --resources gpu=8 round3    # one 8-GPU box
#   snakemake --profile profiles/slurm round3       # SLURM
#   snakemake --configfile config/voc12.yaml ...    # another dataset (overlay on config.yaml)
#   snakemake --cores 2 study --config study=studies/<name>/study.yaml   # a study's sheet
#
# Targets: round0 .. round<T> (T = config `rounds`), round0_pseudo, all; with a study: study.
# Every rule is one EM step; its thin script in workflow_scripts/ calls conta_core.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: f"{workflow.basedir}/config/config.yaml"


# `--config study=studies/<name>/study.yaml`: every run of the study's sheet in one DAG
# (rules/study.smk, target `study`); otherwise the single run of `config`.
if config.get("study"):

    include: "rules/study.smk"

else:

    include: "rules/run.smk"
