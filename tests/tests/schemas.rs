//! Issue 17: schemas from the trait. Services declared `#[meshrpc::service(schema)]`
//! publish JSON Schemas of their types; the gateway serves OpenAPI 3.1 at /openapi.json
//! for every service in the cluster. A real validator (PyPI's openapi-spec-validator)
//! checks the document, and real request and answer bodies are checked against the
//! schemas it publishes for them.

use std::time::Duration;

use meshrpc_tests::harness::{eventually, http, tool, Node};

const LABNODE: &str = env!("CARGO_BIN_EXE_labnode");
const MESHRPC: &str = env!("CARGO_BIN_EXE_meshrpc-cli");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_validates_and_real_bodies_match_its_schemas() {
    if !tool("python3") {
        return;
    }
    let Some(python) = meshrpc_tests::harness::python(&["openapi_spec_validator", "jsonschema"]) else { return };
    let tag = "schemas";
    let gateway =
        Node::start(MESHRPC, &["gateway", "--listen", "127.0.0.1:0", "--listen-addr", "127.0.0.1:0", "--tag", tag])
            .await;
    let mesh = gateway.line("mesh on ", Duration::from_secs(10)).await.expect("mesh address");
    let mesh = mesh.trim_start_matches("mesh on ").to_owned();
    let lab = Node::start(LABNODE, &["--tag", tag, "--name", "lab", "--nodes", &mesh]).await;
    let _greeter =
        Node::start(MESHRPC, &["example", "greeter", "--listen-addr", "127.0.0.1:0", "--tag", tag, "--nodes", &mesh])
            .await;
    let ready = eventually(Duration::from_secs(15), || async {
        let doc = http("GET", &gateway.url("/openapi.json"), "", &[]).await;
        let json: serde_json::Value = serde_json::from_str(&doc.body).ok()?;
        let paths = json["paths"].as_object()?;
        (paths.contains_key("/lab/many") && paths.contains_key("/greeter/greet")).then_some(json)
    })
    .await
    .expect("the gateway's OpenAPI names lab and greeter");
    // The schemas come from the types: a nested struct, an enum with data, a map; each
    // service's under its name.
    let components = &ready["components"]["schemas"];
    for name in ["lab.Nested", "lab.Shape", "lab.LabError", "greeter.Postcard", "greeter.GreetError", "greeter.Error"] {
        assert!(components.get(name).is_some(), "no schema for {name}: {components}");
    }
    // Two services whose types share a name (`Stats`, another shape in each) keep both.
    let properties = |name: &str| components[name]["properties"].as_object().map(|p| p.keys().cloned().collect());
    let properties: [Option<Vec<String>>; 2] = [properties("lab.Stats"), properties("streamer.Stats")];
    assert_eq!(
        properties,
        [
            Some(vec!["dropped".into(), "finished".into(), "started".into()]),
            Some(vec!["dropped".into(), "produced".into(), "started".into()])
        ]
    );
    let data = |path: &str| {
        ready["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["data"]
            ["$ref"]
            .clone()
    };
    assert_eq!(
        (data("/lab/stats"), data("/streamer/producers")),
        ("#/components/schemas/lab.Stats".into(), "#/components/schemas/streamer.Stats".into())
    );
    // As other tools read it: a successful answer's `errors` has items (so generators tell
    // it from an error), every code an answer may carry is listed, integer arguments have
    // the bounds the node holds them to, doc comments are descriptions.
    let greet = &ready["paths"]["/greeter/greet"]["post"];
    let errors = &greet["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["errors"];
    assert_eq!(errors["items"]["$ref"], "#/components/schemas/meshrpc.Error", "{errors}");
    let codes = &components["meshrpc.Error"]["properties"]["code"]["enum"];
    assert!(codes.as_array().unwrap().contains(&"body_timeout".into()), "{codes}");
    let from = &ready["paths"]["/greeter/countdown"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        ["properties"]["from"];
    assert_eq!((from["minimum"].as_u64(), from["maximum"].as_u64()), (Some(0), Some(u64::from(u32::MAX))), "{from}");
    assert_eq!(greet["description"], "Says hello.");
    let nested = serde_json::json!({
        "label": "root",
        "children": [{ "label": "leaf", "children": [], "shape": "Dot" }],
        "shape": { "Poly": [[0, 0], [1, 2]] }
    });
    let calls = serde_json::json!([
        ["/greeter/greet", { "name": "Ada" }, 200],
        ["/greeter/send_postcard", { "card": { "picture_url": "p", "address": "a", "recipient": "", "message": "m" } }, 422],
        ["/lab/many", {
            "a": 7, "b": -9_000_000_000i64, "c": 1.5, "d": true, "e": null, "f": [1, 2, 3],
            "g": { "k": nested }, "h": { "Circle": { "radius": 2.0 } }
        }, 200],
        ["/lab/echo", { "nested": nested }, 200],
        ["/lab/refuse", { "reason": "no" }, 422],
        ["/lab/deadline_left", {}, 200],
        ["/lab/stats", {}, 200],
        ["/streamer/producers", {}, 200],
        // Past a u32 and a u8: refused by the node, and by the document.
        ["/greeter/countdown", { "from": 4_294_967_296u64 }, 400],
        ["/lab/many", {
            "a": 256, "b": 0, "c": 0.0, "d": true, "e": null, "f": [], "g": {}, "h": "Dot"
        }, 400],
    ]);
    // u64::MAX and i128::MIN cross as JSON numbers (text: serde_json's Value holds 64 bits).
    let wide = r#"["/lab/wide", {"a": 18446744073709551615, "b": -170141183460469231731687303715884105728}, 200]"#;
    let calls = format!("{},{wide}]", calls.to_string().strip_suffix(']').expect("a JSON array"));
    let out = tokio::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_openapi.py"))
        .arg(format!("http://{}", gateway.addr))
        .arg(calls)
        .output()
        .await
        .expect("running the checker");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "{report}");
    assert!(report.contains("valid OpenAPI 3.1.0"), "{report}");
    // Every node serves the document too (its port, plaintext here).
    let from_node = http("GET", &lab.url("/openapi.json"), "", &[]).await;
    let from_node: serde_json::Value = serde_json::from_str(&from_node.body).expect("a node's /openapi.json");
    assert_eq!(from_node["paths"]["/lab/wide"], ready["paths"]["/lab/wide"]);

    // A Python client generated by openapi-python-client (PyPI) reads greet's answer as
    // its value (it read it as the error type while `errors` had no items).
    let Some(generator) = meshrpc_tests::harness::python(&["openapi_python_client"]) else { return };
    let work = std::env::temp_dir().join(format!("meshrpc-pyclient-{}", std::process::id()));
    let out = tokio::process::Command::new(&generator)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/generated_client.py"))
        .arg(format!("http://{}", gateway.addr))
        .arg(&work)
        .output()
        .await
        .expect("running the generated client");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success() && report.contains("greet: GreeterGreetResponse200 'Hello, Ada' []"), "{report}");
    let _ = std::fs::remove_dir_all(&work);

    // The API page is served (a real browser reads it in the heavy tier).
    let docs = http("GET", &gateway.url("/docs"), "", &[]).await;
    assert_eq!(docs.status, 200);
    assert!(
        docs.body.contains("fetch(\"openapi.json\")")
            && !docs.body.contains("http://")
            && !docs.body.contains("https://")
    );

    // `meshrpc call` checks arguments against the schema before sending, and keeps every
    // digit of a wide answer.
    let call = |args: &'static str| {
        let mesh = mesh.clone();
        async move {
            tokio::process::Command::new(MESHRPC)
                .args(["call", "lab.wide", args, "--tag", tag, "--nodes", &mesh])
                .output()
                .await
                .unwrap()
        }
    };
    let wrong = call(r#"{"a":"x","b":1}"#).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(stderr.contains("lab.wide: argument `a`: expected u64, got \"x\"; nothing was sent"), "{stderr}");
    let missing = call(r#"{"a":1}"#).await;
    assert!(String::from_utf8_lossy(&missing.stderr).contains("argument `b` is missing (a i128)"));
    let exact = call(r#"{"a":18446744073709551615,"b":-170141183460469231731687303715884105728}"#).await;
    assert_eq!(
        String::from_utf8_lossy(&exact.stdout).trim(),
        "[18446744073709551615,-170141183460469231731687303715884105728]"
    );
    // `meshrpc openapi` prints the same document.
    let cli =
        tokio::process::Command::new(MESHRPC).args(["openapi", "--tag", tag, "--nodes", &mesh]).output().await.unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&cli.stdout).expect("meshrpc openapi prints JSON");
    assert_eq!(printed["paths"]["/lab/wide"], ready["paths"]["/lab/wide"]);

    // TypeScript types for a web front end: the example type-checks, a wrong call does not.
    let Some(tsc) = tsc() else { return };
    let dir = std::env::temp_dir().join(format!("meshrpc-ts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ts = tokio::process::Command::new(MESHRPC)
        .args(["openapi", "--typescript", "--tag", tag, "--nodes", &mesh, "-o"])
        .arg(dir.join("api.ts"))
        .output()
        .await
        .unwrap();
    assert!(ts.status.success(), "{}", String::from_utf8_lossy(&ts.stderr));
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients/typescript");
    for file in ["example.ts", "wrong.ts"] {
        std::fs::copy(format!("{examples}/{file}"), dir.join(file)).unwrap();
    }
    let check = |file: &'static str| {
        let (tsc, dir) = (tsc.clone(), dir.clone());
        async move {
            tokio::process::Command::new(tsc)
                .args(["--noEmit", "--strict", "--target", "es2022", "--lib", "es2022,dom", "--module", "es2022"])
                .args(["--moduleResolution", "bundler", file, "api.ts"])
                .current_dir(dir)
                .output()
                .await
                .unwrap()
        }
    };
    let good = check("example.ts").await;
    assert!(good.status.success(), "tsc: {}", String::from_utf8_lossy(&good.stdout));
    let bad = check("wrong.ts").await;
    let complaint = String::from_utf8_lossy(&bad.stdout);
    assert!(
        !bad.status.success() && complaint.contains("Type 'number' is not assignable to type 'string'"),
        "{complaint}"
    );
}

/// TypeScript's compiler: `MESHRPC_TSC` (test.sh installs it with npm), else `tsc`.
fn tsc() -> Option<String> {
    let tsc = std::env::var("MESHRPC_TSC").unwrap_or_else(|_| "tsc".into());
    if std::process::Command::new(&tsc).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(tsc);
    }
    meshrpc_tests::tier::cannot_run(&format!("{tsc}: no TypeScript compiler (./test.sh installs it with npm)"), true);
    None
}
