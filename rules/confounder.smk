# Step 5 of a round: the confounder set C = class-wise average masks of round t's
# segmentation predictions on the training split (or its pseudo-masks), for round t+1.


rule confounder:
    input:
        manifest=MANIFEST,
        mask_dir=confounder_masks_of,
    output:
        out=L.confounder("{t}"),
    log:
        L.log("confounder", "round{t}"),
    benchmark:
        L.benchmark("confounder", "round{t}")
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg=section_json("context"),
        split="train",
        round=round_of,
        source=config["context"]["confounder_source"],
    script:
        "../workflow_scripts/confounder.py"
