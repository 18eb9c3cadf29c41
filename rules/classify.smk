# Steps 1-2 of a round: the multi-label classifier (round t > 0: with the context map
# M_t from round t-1's masks X_m and confounder set) and its class activation maps.


rule train_cls:
    input:
        pretrained=pretrain_input("classifier"),
        manifest=MANIFEST,
        xm=lambda w: xm_dirs(w.t),
        confounder=lambda w: confounder_input(w.t),
    output:
        model=f"{R}/round{{t}}/cls/model.pth",
        log_csv=f"{R}/round{{t}}/cls/train_log.csv",
    params:
        loader_workers=config["loader_workers"],
        py=PY,
        script=script("train_cls.py"),
        cfg=cfg_json("classifier", "context"),
        extra=lambda w, input: context_flags(input.xm, input.confounder),
        device=config["device"],
        seed=round_seed,
    log:
        f"{R}/logs/train_cls/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/train_cls/round{{t}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " --out {output.model} --log {output.log_csv} {params.extra}"
        " --device {params.device} --threads {threads} --seed {params.seed} --loader-workers {params.loader_workers} > {log} 2>&1"


rule make_cam:
    input:
        manifest=MANIFEST,
        model=f"{R}/round{{t}}/cls/model.pth",
        xm=lambda w: xm_dirs(w.t),
    output:
        directory(f"{R}/round{{t}}/cam/{{shard}}"),
    params:
        py=PY,
        script=script("make_cam.py"),
        cfg=section_json("cam"),
        xm=lambda w, input: flags("--xm-dir", input.xm),
        shards=len(SHARDS),
        device=config["device"],
    log:
        f"{R}/logs/make_cam/round{{t}}_{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/make_cam/round{{t}}_{{shard}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train"
        " --shard {wildcards.shard} --num-shards {params.shards} --model {input.model} --out-dir {output}"
        " {params.xm} --device {params.device} --threads {threads} > {log} 2>&1"


rule eval_cam:
    input:
        manifest=MANIFEST,
        cams=lambda w: shard_dirs(w.t, "cam"),
    output:
        f"{R}/round{{t}}/cam_eval.csv",
    params:
        py=PY,
        script=script("eval_cam.py"),
        cfg=section_json("cam"),
        cams=lambda w, input: flags("--cams-dir", input.cams),
    log:
        f"{R}/logs/eval_cam/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/eval_cam/round{{t}}.tsv"
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train_eval"
        " {params.cams} --out {output} > {log} 2>&1"


rule context_diagnostics:
    input:
        manifest=MANIFEST,
        model=f"{R}/round{{t}}/cls/model.pth",
        log_csv=f"{R}/round{{t}}/cls/train_log.csv",
        xm=lambda w: xm_dirs(w.t),
    output:
        f"{R}/round{{t}}/context_diagnostics.json",
    params:
        py=PY,
        script=script("context_diagnostics.py"),
        cfg=json.dumps({"diagnostics_images": config["context"]["diagnostics_images"]}),
        xm=lambda w, input: flags("--xm-dir", input.xm),
        device=config["device"],
    log:
        f"{R}/logs/context_diagnostics/round{{t}}.log",
    benchmark:
        f"{R}/benchmarks/context_diagnostics/round{{t}}.tsv"
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        "{params.py} {params.script} --cfg {params.cfg:q} --manifest {input.manifest} --split train_eval"
        " --model {input.model} --train-log {input.log_csv} {params.xm} --out {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"
