//! The real Spark client (PyPI's pyspark 3.5.3 with the machine's Java) for
//! end-to-end tests: where it is, whether it can run, and a cluster-mode
//! submission of SparkPi as the fixtures were captured.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether a Java runtime is installed (tests that need it skip loudly otherwise).
pub fn java_available() -> bool {
    std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Spark `version`'s home in the cache `./scripts/fetch-spark.sh VERSION`
/// fills (`SPARK_HOME_<major>_<minor>_<patch>` overrides it); panics with
/// the fix when it is missing.
pub fn spark_home_of(version: &str) -> PathBuf {
    let var = format!("SPARK_HOME_{}", version.replace('.', "_"));
    let home = std::env::var_os(&var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(format!(".cache/sparkcap/pyspark-{version}/deps"))
    });
    assert!(
        home.join("bin/spark-submit").exists(),
        "Spark {version} not found at {}: run ./scripts/fetch-spark.sh {version} (./scripts/test.sh does) or set {var}",
        home.display()
    );
    home
}

/// `SPARK_HOME`, else the cache `./scripts/fetch-spark.sh` fills; panics
/// with the fix when Spark is missing.
pub fn spark_home() -> PathBuf {
    let home = std::env::var_os("SPARK_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/sparkcap/pyspark-3.5.3/deps")
    });
    assert!(
        home.join("bin/spark-submit").exists(),
        "Spark not found at {}: run ./scripts/fetch-spark.sh (./scripts/test.sh does) or set SPARK_HOME",
        home.display()
    );
    home
}

/// `spark-submit --deploy-mode cluster` of SparkPi named `ingest-orders` with
/// 3 executors × 2 cores into `namespace`, not waiting for completion.
/// Returns whether it succeeded and everything it printed.
pub async fn submit_cluster_mode(spark: &Path, kubeconfig: &Path, url: &str, namespace: &str) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(spark.join("bin/spark-submit"))
            .env("SPARK_HOME", spark)
            .env("KUBECONFIG", kubeconfig)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .args([
                "--master",
                &format!("k8s://{url}"),
                "--deploy-mode",
                "cluster",
                "--name",
                "ingest-orders",
                "--class",
                "org.apache.spark.examples.SparkPi",
                "--conf",
                &format!("spark.kubernetes.namespace={namespace}"),
                "--conf",
                "spark.kubernetes.container.image=apache/spark:3.5.3",
                "--conf",
                "spark.executor.instances=3",
                "--conf",
                "spark.executor.cores=2",
                "--conf",
                "spark.kubernetes.submission.waitAppCompletion=false",
                "local:///opt/spark/examples/jars/spark-examples.jar",
                "100",
            ])
            .output(),
    )
    .await
    .expect("spark-submit finished within 180 s")
    .expect("spark-submit runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}
