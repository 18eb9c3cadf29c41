# method amn (AMN, CVPR 2022, as the seed method of a round; included by the Snakefile after
# rules/pseudo_mask.smk, which routes IRNet / the random walk to the AMN outputs):
#
#   cls[t] -> cam[t] -> ir_label[t] (first-stage seeds, make_ir_label)
#     -> train_amn[t] (AMN from those seeds; t > 0: CONTA context as the classifier's)
#     -> make_amn_cam[t, shard] -> eval_amn_cam[t] (round<t>/amn_cam_eval.csv)
#     -> make_amn_ir_label[t, shard] (amn.ir_fg_threshold / amn.ir_bg_threshold)
#     -> train_irn / random_walk (amn_cam ** amn.rw_power) / segmentation / confounder as usual.
#
# The rules exist only with method amn (an irn config need not have an `amn:` section);
# their --cfg objects (RULE_JSON) come from conta_core.infra.rule_configs.

if AMN:

    rule train_amn:
        input:
            manifest=MANIFEST,
            ir_label_dir=ir_labels_of,
            classifier=L.model("{t}", "cls"),
            xm_dir=xm_of,
            confounder=confounder_of,
        output:
            out=L.model("{t}", "amn"),
            train_log=L.train_log("{t}", "amn"),
        log:
            L.log("train_amn", "round{t}"),
        benchmark:
            L.benchmark("train_amn", "round{t}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        resources:
            gpu=GPU,
        params:
            cfg=RULE_JSON["train_amn"],
            split="train",
            device=config["device"],
            seed=round_seed,
            loader_workers=config["loader_workers"],
        script:
            "../workflow_scripts/train_amn.py"

    rule make_amn_cam:
        input:
            manifest=MANIFEST,
            model=L.model("{t}", "amn"),
            ir_label_dir=ir_labels_of,
            xm_dir=xm_of,
        output:
            out_dir=directory(L.shard_dir("{t}", "amn_cam", "{shard}")),
        log:
            L.log("make_amn_cam", "round{t}_{shard}"),
        benchmark:
            L.benchmark("make_amn_cam", "round{t}_{shard}")
        conda:
            CONDA_ENV
        threads: config["threads"]
        resources:
            gpu=GPU,
        params:
            cfg=RULE_JSON["make_amn_cam"],
            split="train",
            num_shards=len(SHARDS),
            device=config["device"],
            seed=round_seed,
        script:
            "../workflow_scripts/make_amn_cam.py"

    use rule eval_cam as eval_amn_cam with:
        input:
            manifest=MANIFEST,
            cams_dir=amn_cams_of,
        output:
            out=L.eval_csv("{t}", "amn_cam"),
        log:
            L.log("eval_amn_cam", "round{t}"),
        benchmark:
            L.benchmark("eval_amn_cam", "round{t}")
        params:
            cfg=RULE_JSON["eval_amn_cam"],
            split="train_eval",

    use rule make_ir_label as make_amn_ir_label with:
        input:
            manifest=MANIFEST,
            cams_dir=amn_cams_of,
        output:
            out_dir=directory(L.shard_dir("{t}", "amn_ir_label", "{shard}")),
        log:
            L.log("make_amn_ir_label", "round{t}_{shard}"),
        benchmark:
            L.benchmark("make_amn_ir_label", "round{t}_{shard}")
        params:
            cfg=RULE_JSON["make_amn_ir_label"],
            split="train",
            num_shards=len(SHARDS),
