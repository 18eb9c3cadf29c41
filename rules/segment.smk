# Step 4 of a round: DeepLab-v2 trained on the round's pseudo-masks; predictions on the
# training split (X_m, the input of the confounder set and the next round's context) and
# on val (scored).


rule train_seg:
    input:
        pretrained=pretrain_input("segmentation"),
        manifest=MANIFEST,
        label_dir=pseudo_masks_of,
    output:
        out=L.model("{t}", "seg"),
        train_log=L.train_log("{t}", "seg"),
    log:
        L.log("train_seg", "round{t}"),
    benchmark:
        L.benchmark("train_seg", "round{t}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=section_json("segmentation"),
        split="train",
        device=config["device"],
        seed=round_seed,
        loader_workers=config["loader_workers"],
    script:
        "../workflow_scripts/train_seg.py"


rule infer_seg:
    input:
        manifest=MANIFEST,
        model=L.model("{t}", "seg"),
    output:
        out_dir=directory(L.seg_pred_dir("{t}", "{split}", "{shard}")),
    log:
        L.log("infer_seg", "round{t}_{split}_{shard}"),
    benchmark:
        L.benchmark("infer_seg", "round{t}_{split}_{shard}")
    conda:
        CONDA_ENV
    threads: config["threads"]
    resources:
        gpu=GPU,
    params:
        cfg=section_json("segmentation"),
        num_shards=len(SHARDS),
        device=config["device"],
    script:
        "../workflow_scripts/infer_seg.py"


rule eval_seg:
    input:
        manifest=MANIFEST,
        pred_dir=seg_preds_of,
    output:
        out=L.seg_eval_csv("{t}", "{split}"),
    log:
        L.log("eval_seg", "round{t}_{split}"),
    benchmark:
        L.benchmark("eval_seg", "round{t}_{split}")
    conda:
        CONDA_ENV
    threads: 1
    params:
        cfg="{}",
        split=eval_split_of,
        stage=seg_stage_of,
    script:
        "../workflow_scripts/eval_masks.py"
