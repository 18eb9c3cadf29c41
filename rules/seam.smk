# method seam (SEAM, CVPR 2020, with AffinityNet; conta_core/steps/seam.py), included by the
# Snakefile after rules/pseudo_mask.smk. SEAM replaces the CAM classifier, the IR labels and
# IRNet + its walk of a round; every other rule (eval_cam, the confounding measures, the
# context diagnostics, DeepLab-v2, the confounder) reads the same paths as with irn:
#
#   train_seam[t] -> round<t>/cls/model.pth (a "seam" checkpoint; t > 0: CONTA context at block 5)
#     -> make_seam_cam[t, shard] -> round<t>/cam/ (standard CAM files, eval_cam as usual)
#     -> make_seam_crf_label[t, shard] -> round<t>/ir_label/ (<id>.npz la/ha scores + <id>.png)
#     -> train_aff[t] -> round<t>/aff/model.pth
#     -> seam_random_walk[t, shard] -> round<t>/pseudo_mask/ -> segmentation / confounder as usual.
#
# The rules exist only with method seam (an irn config need not have a `seam:` section); the
# ruleorder lines prefer them to the irn rules that write the same paths. Their --cfg objects
# (METHOD_JSON) come from conta_core.infra.rule_configs.seam_rule_configs.

if SEAM:

    ruleorder: train_seam > train_cls
    ruleorder: make_seam_cam > make_cam
    ruleorder: make_seam_crf_label > make_ir_label
    ruleorder: seam_random_walk > random_walk

    rule train_seam:
        input:
            manifest=MANIFEST,
            xm_dir=xm_of,
            confounder=confounder_of,
        output:
            out=L.model("{t}", "cls"),
            train_log=L.train_log("{t}", "cls"),
        log:
            L.log("train_seam", "round{t}"),
        benchmark:
            L.benchmark("train_seam", "round{t}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        resources:
            gpu=GPU,
        params:
            cfg=METHOD_JSON["train"],
            split="train",
            device=config["device"],
            seed=round_seed,
            loader_workers=config["loader_workers"],
        script:
            "../workflow_scripts/train_seam.py"

    rule make_seam_cam:
        input:
            manifest=MANIFEST,
            model=L.model("{t}", "cls"),
            xm_dir=xm_of,
        output:
            out_dir=directory(L.shard_dir("{t}", "cam", "{shard}")),
        log:
            L.log("make_seam_cam", "round{t}_{shard}"),
        benchmark:
            L.benchmark("make_seam_cam", "round{t}_{shard}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        resources:
            gpu=GPU,
        params:
            cfg=METHOD_JSON["cam"],
            split="train",
            num_shards=len(SHARDS),
            device=config["device"],
        script:
            "../workflow_scripts/make_seam_cam.py"

    rule make_seam_crf_label:
        input:
            manifest=MANIFEST,
            cams_dir=cams_of,
        output:
            out_dir=directory(L.shard_dir("{t}", "ir_label", "{shard}")),
        log:
            L.log("make_seam_crf_label", "round{t}_{shard}"),
        benchmark:
            L.benchmark("make_seam_crf_label", "round{t}_{shard}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        params:
            cfg=METHOD_JSON["crf"],
            split="train",
            num_shards=len(SHARDS),
        script:
            "../workflow_scripts/make_seam_crf_label.py"

    rule train_aff:
        input:
            manifest=MANIFEST,
            label_dir=ir_labels_of,
            seam=L.model("{t}", "cls"),
        output:
            out=L.model("{t}", "aff"),
            train_log=L.train_log("{t}", "aff"),
        log:
            L.log("train_aff", "round{t}"),
        benchmark:
            L.benchmark("train_aff", "round{t}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        resources:
            gpu=GPU,
        params:
            cfg=METHOD_JSON["aff"],
            split="train",
            device=config["device"],
            seed=round_seed,
            loader_workers=config["loader_workers"],
        script:
            "../workflow_scripts/train_aff.py"

    rule seam_random_walk:
        input:
            manifest=MANIFEST,
            cams_dir=cams_of,
            aff=L.model("{t}", "aff"),
        output:
            out_dir=directory(L.shard_dir("{t}", "pseudo_mask", "{shard}")),
        log:
            L.log("seam_random_walk", "round{t}_{shard}"),
        benchmark:
            L.benchmark("seam_random_walk", "round{t}_{shard}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        resources:
            gpu=GPU,
        params:
            cfg=METHOD_JSON["walk"],
            split="train",
            num_shards=len(SHARDS),
            device=config["device"],
        script:
            "../workflow_scripts/seam_random_walk.py"
