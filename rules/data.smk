# Step 0: prepare the configured dataset (generate `synthetic`, or check and index a real
# one) and write the manifest every later step reads.


rule prepare_data:
    output:
        manifest=MANIFEST,
    params:
        cfg=section_json("dataset"),
        out_dir=f"{R}/data",
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    threads: 1
    shell:
        "{PY} {SCRIPTS}/prepare_data.py --cfg {params.cfg:q} --out-dir {params.out_dir} > {log} 2>&1"
