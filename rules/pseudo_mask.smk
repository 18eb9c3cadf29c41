# Step 3 of a round: CAM -> dense-CRF IR labels -> IRNet boundary net -> random walk ->
# pseudo-masks, and their mIoU against GT on the training split.
# make_ir_label and random_walk call the method's step functions (conta_core.infra.methods)
# with its --cfg objects (RULE_JSON, conta_core.infra.rule_configs):
# method amn (rules/amn.smk): IRNet and the walk take the AMN maps and AMN IR labels instead,
# and the walk starts from amn_cam ** amn.rw_power (seed_labels_of, walk_cams_of).
# method seam (rules/seam.smk): make_ir_label writes SEAM's low / high-alpha CRF labels, and
# the walk is AffinityNet's (its model: aff/model.pth, METHOD.walk_model); no IRNet.
# With method irn nothing here changes.


rule make_ir_label:
    input:
        manifest=MANIFEST,
        cams_dir=cams_of,
    output:
        out_dir=directory(L.shard_dir("{t}", "ir_label", "{shard}")),
    log:
        L.log("make_ir_label", "round{t}_{shard}"),
    benchmark:
        L.benchmark("make_ir_label", "round{t}_{shard}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    params:
        cfg=RULE_JSON["make_ir_label"],
        split="train",
        num_shards=len(SHARDS),
    script:
        "../workflow_scripts/make_ir_label.py"


rule train_irn:
    input:
        manifest=MANIFEST,
        ir_label_dir=seed_labels_of,
        classifier=L.model("{t}", "cls"),
    output:
        out=L.model("{t}", "irn"),
        train_log=L.train_log("{t}", "irn"),
    log:
        L.log("train_irn", "round{t}"),
    benchmark:
        L.benchmark("train_irn", "round{t}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=section_json("irn"),
        split="train",
        device=config["device"],
        seed=round_seed,
        loader_workers=config["loader_workers"],
    script:
        "../workflow_scripts/train_irn.py"


rule random_walk:
    input:
        manifest=MANIFEST,
        cams_dir=walk_cams_of,
        model=L.model("{t}", METHOD.walk_model),
    output:
        out_dir=directory(L.shard_dir("{t}", "pseudo_mask", "{shard}")),
    log:
        L.log("random_walk", "round{t}_{shard}"),
    benchmark:
        L.benchmark("random_walk", "round{t}_{shard}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=RULE_JSON["random_walk"],
        split="train",
        num_shards=len(SHARDS),
        device=config["device"],
    script:
        "../workflow_scripts/random_walk.py"


rule eval_pseudo:
    input:
        manifest=MANIFEST,
        pred_dir=pseudo_masks_of,
    output:
        out=L.eval_csv("{t}", "pseudo_mask"),
    log:
        L.log("eval_pseudo", "round{t}"),
    benchmark:
        L.benchmark("eval_pseudo", "round{t}")
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg="{}",
        split="train_eval",
        stage="pseudo_mask",
    script:
        "../workflow_scripts/eval_masks.py"
