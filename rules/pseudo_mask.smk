# Step 3 of a round: CAM -> dense-CRF IR labels -> IRNet boundary net -> random walk ->
# pseudo-masks, and their mIoU against GT on the training split.
# method amn (rules/amn.smk): IRNet and the walk take the AMN maps and AMN IR labels instead,
# and the walk starts from amn_cam ** amn.rw_power (seed_dirs, walk_cam_dirs and
# random_walk_json in rules/common.smk). With method irn nothing here changes.


rule make_ir_label:
    input:
        manifest=MANIFEST,
        cams=lambda w: shard_dirs(w.t, "cam"),
    output:
        directory(f"{R}/round{{t}}/ir_label/{{shard}}"),
    params:
        py=PY,
        script=script("make_ir_label.py"),
        cfg=section_json("ir_label"),
        cams=lambda w, input: flags("--cams-dir", input.cams),
        shards=len(SHARDS),
    log:
        f"{R}/logs/make_ir_label/round{{t}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/make_ir_label/round{{t}}_{{shard}}.tsv"
    threads: config["threads"]
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " --shard {wildcards.shard} --num-shards {params.shards} {params.cams} --out-dir {output}"
        " --threads {threads} > {log} 2>&1"


rule train_irn:
    input:
        manifest=MANIFEST,
        ir_labels=lambda w: seed_dirs(w.t),
        classifier=f"{R}/round{{t}}/cls/model.pth",
    output:
        model=f"{R}/round{{t}}/irn/model.pth",
        log_csv=f"{R}/round{{t}}/irn/train_log.csv",
    params:
        loader_workers=config["loader_workers"],
        py=PY,
        script=script("train_irn.py"),
        cfg=section_json("irn"),
        labels=lambda w, input: flags("--ir-label-dir", input.ir_labels),
        device=config["device"],
        seed=round_seed,
    log:
        f"{R}/logs/train_irn/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/train_irn/round{{t}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " {params.labels} --classifier {input.classifier} --out {output.model} --log {output.log_csv}"
        " --device {params.device} --threads {threads} --seed {params.seed} --loader-workers {params.loader_workers} > {log} 2>&1"


rule random_walk:
    input:
        manifest=MANIFEST,
        cams=lambda w: walk_cam_dirs(w.t),
        irn=f"{R}/round{{t}}/irn/model.pth",
    output:
        directory(f"{R}/round{{t}}/pseudo_mask/{{shard}}"),
    params:
        py=PY,
        script=script("random_walk.py"),
        cfg=random_walk_json(),
        cams=lambda w, input: flags("--cams-dir", input.cams),
        shards=len(SHARDS),
        device=config["device"],
    log:
        f"{R}/logs/random_walk/round{{t}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/random_walk/round{{t}}_{{shard}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " --shard {wildcards.shard} --num-shards {params.shards} {params.cams} --irn {input.irn}"
        " --out-dir {output} --device {params.device} --threads {threads} > {log} 2>&1"


rule eval_pseudo:
    input:
        manifest=MANIFEST,
        masks=lambda w: shard_dirs(w.t, "pseudo_mask"),
    output:
        f"{R}/round{{t}}/pseudo_mask_eval.csv",
    params:
        py=PY,
        script=script("eval_masks.py"),
        masks=lambda w, input: flags("--pred-dir", input.masks),
    log:
        f"{R}/logs/eval_pseudo/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/eval_pseudo/round{{t}}.tsv"
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg '{{}}' --manifest {input.manifest} --split train_eval"
        " {params.masks} --stage pseudo_mask --out {output} > {log} 2>&1"
