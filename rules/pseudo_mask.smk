# Step 3 of a round: CAM -> dense-CRF IR labels -> IRNet boundary net -> random walk ->
# pseudo-masks, and their mIoU against GT on the training split.
# method amn (rules/amn.smk): IRNet and the walk take the AMN maps and AMN IR labels instead,
# and the walk starts from amn_cam ** amn.rw_power. With method irn nothing here changes.

AMN = config["method"] == "amn"


def seed_dirs(t):
    """IR label folders IRNet trains on: ir_label (irn) or amn_ir_label (amn)."""
    return shard_dirs(t, "amn_ir_label" if AMN else "ir_label")


def walk_cam_dirs(t):
    """Map folders the random walk propagates: cam (irn) or amn_cam (amn)."""
    return shard_dirs(t, "amn_cam" if AMN else "cam")


def random_walk_json():
    """The random_walk section (+ cam_power = amn.rw_power for amn) as --cfg JSON."""
    if not AMN:
        return section_json("random_walk")
    return json.dumps({**config["random_walk"], "cam_power": config["amn"]["rw_power"]}, sort_keys=True)


rule make_ir_label:
    input:
        manifest=MANIFEST,
        cams=lambda w: shard_dirs(w.t, "cam"),
    output:
        directory(f"{R}/round{{t}}/ir_label/{{shard}}"),
    params:
        cfg=section_json("ir_label"),
        cams=lambda w, input: flags("--cams-dir", input.cams),
        shards=len(SHARDS),
    log:
        f"{R}/logs/make_ir_label/round{{t}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/make_ir_label/round{{t}}_{{shard}}.tsv"
    threads: config["threads"]
    shell:
        "{PY} {SCRIPTS}/make_ir_label.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
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
        cfg=section_json("irn"),
        labels=lambda w, input: flags("--ir-label-dir", input.ir_labels),
        seed=lambda w: config["seed"] + int(w.t),
    log:
        f"{R}/logs/train_irn/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/train_irn/round{{t}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    shell:
        "{PY} {SCRIPTS}/train_irn.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " {params.labels} --classifier {input.classifier} --out {output.model} --log {output.log_csv}"
        " --device {config[device]} --threads {threads} --seed {params.seed} > {log} 2>&1"


rule random_walk:
    input:
        manifest=MANIFEST,
        cams=lambda w: walk_cam_dirs(w.t),
        irn=f"{R}/round{{t}}/irn/model.pth",
    output:
        directory(f"{R}/round{{t}}/pseudo_mask/{{shard}}"),
    params:
        cfg=random_walk_json(),
        cams=lambda w, input: flags("--cams-dir", input.cams),
        shards=len(SHARDS),
    log:
        f"{R}/logs/random_walk/round{{t}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/random_walk/round{{t}}_{{shard}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    shell:
        "{PY} {SCRIPTS}/random_walk.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " --shard {wildcards.shard} --num-shards {params.shards} {params.cams} --irn {input.irn}"
        " --out-dir {output} --device {config[device]} --threads {threads} > {log} 2>&1"


rule eval_pseudo:
    input:
        manifest=MANIFEST,
        masks=lambda w: shard_dirs(w.t, "pseudo_mask"),
    output:
        f"{R}/round{{t}}/pseudo_mask_eval.csv",
    params:
        masks=lambda w, input: flags("--pred-dir", input.masks),
    log:
        f"{R}/logs/eval_pseudo/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/eval_pseudo/round{{t}}.tsv"
    threads: 1
    shell:
        "{PY} {SCRIPTS}/eval_masks.py --cfg '{{}}' --manifest {input.manifest} --split train_eval"
        " {params.masks} --stage pseudo_mask --out {output} > {log} 2>&1"
