# Steps 1-2 of a round: the multi-label classifier (round t > 0: with the context map
# M_t from round t-1's masks X_m and confounder set) and its class activation maps.


def xm_dirs(t):
    """Folders of X_m for round t: round t-1's masks (none for round 0 or context: none)."""
    t = int(t)
    if t == 0 or not CONTA:
        return []
    if config["context"]["confounder_source"] == "pseudo":
        return shard_dirs(t - 1, "pseudo_mask")
    return [f"{rdir(t - 1)}/seg_pred/train/{s}" for s in SHARDS]


def confounder_input(t):
    t = int(t)
    return [f"{rdir(t - 1)}/confounder.h5"] if t > 0 and CONTA else []


rule train_cls:
    input:
        manifest=MANIFEST,
        xm=lambda w: xm_dirs(w.t),
        confounder=lambda w: confounder_input(w.t),
    output:
        model=f"{R}/round{{t}}/cls/model.pth",
        log_csv=f"{R}/round{{t}}/cls/train_log.csv",
    params:
        cfg=cfg_json("classifier", "context"),
        extra=lambda w, input: " ".join(
            [flags("--xm-dir", input.xm)] + [f"--confounder {c}" for c in input.confounder]
        ),
        seed=lambda w: config["seed"] + int(w.t),
    log:
        f"{R}/logs/train_cls/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/train_cls/round{{t}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    shell:
        "{PY} {SCRIPTS}/train_cls.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " --out {output.model} --log {output.log_csv} {params.extra}"
        " --device {config[device]} --threads {threads} --seed {params.seed} > {log} 2>&1"


rule make_cam:
    input:
        manifest=MANIFEST,
        model=f"{R}/round{{t}}/cls/model.pth",
        xm=lambda w: xm_dirs(w.t),
    output:
        directory(f"{R}/round{{t}}/cam/{{shard}}"),
    params:
        cfg=section_json("cam"),
        xm=lambda w, input: flags("--xm-dir", input.xm),
        shards=len(SHARDS),
    log:
        f"{R}/logs/make_cam/round{{t}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/make_cam/round{{t}}_{{shard}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    shell:
        "{PY} {SCRIPTS}/make_cam.py --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " --shard {wildcards.shard} --num-shards {params.shards} --model {input.model} --out-dir {output}"
        " {params.xm} --device {config[device]} --threads {threads} > {log} 2>&1"


rule eval_cam:
    input:
        manifest=MANIFEST,
        cams=lambda w: shard_dirs(w.t, "cam"),
    output:
        f"{R}/round{{t}}/cam_eval.csv",
    params:
        cfg=section_json("cam"),
        cams=lambda w, input: flags("--cams-dir", input.cams),
    log:
        f"{R}/logs/eval_cam/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/eval_cam/round{{t}}.tsv"
    threads: 1
    shell:
        "{PY} {SCRIPTS}/eval_cam.py --cfg {params.cfg:q} --manifest {input.manifest} --split train_eval"
        " {params.cams} --out {output} > {log} 2>&1"
