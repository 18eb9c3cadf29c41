# Step 5 of a round: the confounder set C = class-wise average masks of round t's
# segmentation predictions on the training split (or its pseudo-masks), for round t+1.


rule confounder:
    input:
        manifest=MANIFEST,
        masks=lambda w: confounder_masks(w.t),
    output:
        f"{R}/round{{t}}/confounder.h5",
    params:
        py=PY,
        script=script("confounder.py"),
        cfg=section_json("context"),
        masks=lambda w, input: flags("--mask-dir", input.masks),
        source=config["context"]["confounder_source"],
    log:
        f"{R}/logs/confounder/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/confounder/round{{t}}.tsv"
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " {params.masks} --round {wildcards.t} --source {params.source} --out {output} > {log} 2>&1"
