# Step 4 of a round: DeepLab-v2 trained on the round's pseudo-masks; predictions on the
# training split (X_m, the input of the confounder set and the next round's context) and
# on val (scored).


rule train_seg:
    input:
        pretrained=pretrain_input("segmentation"),
        manifest=MANIFEST,
        labels=lambda w: shard_dirs(w.t, "pseudo_mask"),
    output:
        model=f"{R}/round{{t}}/seg/model.pth",
        log_csv=f"{R}/round{{t}}/seg/train_log.csv",
    params:
        loader_workers=config["loader_workers"],
        py=PY,
        script=script("train_seg.py"),
        cfg=section_json("segmentation"),
        labels=lambda w, input: flags("--label-dir", input.labels),
        device=config["device"],
        seed=round_seed,
    log:
        f"{R}/logs/train_seg/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/train_seg/round{{t}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " {params.labels} --out {output.model} --log {output.log_csv}"
        " --device {params.device} --threads {threads} --seed {params.seed} --loader-workers {params.loader_workers} > {log} 2>&1"


rule infer_seg:
    input:
        manifest=MANIFEST,
        model=f"{R}/round{{t}}/seg/model.pth",
    output:
        directory(f"{R}/round{{t}}/seg_pred/{{split}}/{{shard}}"),
    params:
        py=PY,
        script=script("infer_seg.py"),
        cfg=section_json("segmentation"),
        shards=len(SHARDS),
        device=config["device"],
    log:
        f"{R}/logs/infer_seg/round{{t}}_{{split}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/infer_seg/round{{t}}_{{split}}_{{shard}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split {wildcards.split}"
        " --shard {wildcards.shard} --num-shards {params.shards} --model {input.model} --out-dir {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"


rule eval_seg:
    input:
        manifest=MANIFEST,
        preds=lambda w: seg_pred_dirs(w.t, w.split),
    output:
        f"{R}/round{{t}}/seg_eval_{{split}}.csv",
    params:
        py=PY,
        script=script("eval_masks.py"),
        preds=lambda w, input: flags("--pred-dir", input.preds),
        eval_split=lambda w: "train_eval" if w.split == "train" else w.split,
    log:
        f"{R}/logs/eval_seg/round{{t}}_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/eval_seg/round{{t}}_{{split}}.tsv"
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg '{{}}' --manifest {input.manifest} --split {params.eval_split}"
        " {params.preds} --stage seg_{wildcards.split} --out {output} > {log} 2>&1"
