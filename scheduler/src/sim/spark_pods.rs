//! The pods Spark 3.5 creates, as it sends them to the API server (see
//! `webhook/tests/fixtures/`): a driver with its `spark.properties`
//! ConfigMap volume, then executors owned by the driver. The simulator sends
//! them through the webhook's real `admit`, so they must look like the real thing.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};

/// One Spark application run.
#[derive(Debug, Clone)]
pub struct AppPods<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// `spark-app-name` (the job).
    pub job: &'a str,
    /// `spark-app-selector`.
    pub app_id: &'a str,
    /// Driver cpu (millicores) and memory (bytes).
    pub driver: (i64, i64),
    /// Executor count, cpu (millicores) and `spark.executor.memory` (bytes).
    pub executors: (i64, i64, i64),
}

/// As Kubernetes writes cpu: "2", "1500m".
fn cpu_text(mc: i64) -> String {
    sparkcap_ledger::Millicores(mc).to_string()
}

fn mib(bytes: i64) -> String {
    format!("{}Mi", bytes >> 20)
}

use crate::observe::with_spark_overhead as with_overhead;

impl AppPods<'_> {
    fn conf_map_name(&self) -> String {
        format!("spark-drv-{}-conf-map", &self.app_id[6..self.app_id.len().min(22)])
    }

    /// The driver pod (before admission).
    pub fn driver_pod(&self, uid: &str, created: &str) -> Value {
        let (cpu, mem) = self.driver;
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{}-{}-driver", self.job, &self.app_id[6..22.min(self.app_id.len())]),
                "namespace": self.namespace, "uid": uid, "creationTimestamp": created,
                "labels": {"spark-version": "3.5.3", "spark-app-selector": self.app_id,
                           "spark-app-name": self.job, "spark-role": "driver"}
            },
            "spec": {
                "containers": [{
                    "name": "spark-kubernetes-driver", "image": "apache/spark:3.5.3",
                    "args": ["driver", "--properties-file", "/opt/spark/conf/spark.properties"],
                    "resources": {"limits": {"memory": mib(with_overhead(mem))},
                                  "requests": {"cpu": cpu_text(cpu), "memory": mib(with_overhead(mem))}},
                    "volumeMounts": [{"mountPath": "/opt/spark/conf", "name": "spark-conf-volume-driver"}]
                }],
                "restartPolicy": "Never",
                "volumes": [{"name": "spark-conf-volume-driver",
                             "configMap": {"name": self.conf_map_name(),
                                           "items": [{"key": "spark.properties", "path": "spark.properties"}]}}]
            }
        })
    }

    /// The driver's `spark.properties` ConfigMap, where the scheduler reads the gang.
    pub fn conf_map(&self) -> ConfigMap {
        let (count, cpu, mem) = self.executors;
        let props = format!(
            "spark.app.name={}\nspark.app.id={}\nspark.executor.instances={count}\nspark.executor.cores={}\n\
             spark.executor.memory={}m\nspark.kubernetes.namespace={}\n",
            self.job,
            self.app_id,
            (cpu + 999) / 1000,
            mem >> 20,
            self.namespace
        );
        let mut props = props;
        if cpu % 1000 != 0 {
            props.push_str(&format!("spark.kubernetes.executor.request.cores={}\n", cpu_text(cpu)));
        }
        serde_json::from_value(json!({
            "metadata": {"name": self.conf_map_name(), "namespace": self.namespace},
            "data": {"spark.properties": props}
        }))
        .expect("a valid ConfigMap")
    }

    /// Executor number `n` (1-based, as Spark counts them).
    pub fn executor_pod(&self, n: i64, uid: &str, created: &str, driver_uid: &str, driver_name: &str) -> Value {
        let (_, cpu, mem) = self.executors;
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{}-{}-exec-{n}", self.job, &self.app_id[6..22.min(self.app_id.len())]),
                "namespace": self.namespace, "uid": uid, "creationTimestamp": created,
                "labels": {"spark-version": "3.5.3", "spark-app-selector": self.app_id,
                           "spark-app-name": self.job, "spark-role": "executor",
                           "spark-exec-id": n.to_string(), "spark-exec-resourceprofile-id": "0"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": driver_name,
                                     "uid": driver_uid, "controller": true}]
            },
            "spec": {
                "containers": [{
                    "name": "spark-kubernetes-executor", "image": "apache/spark:3.5.3", "args": ["executor"],
                    "resources": {"limits": {"memory": mib(with_overhead(mem))},
                                  "requests": {"cpu": cpu_text(cpu), "memory": mib(with_overhead(mem))}}
                }],
                "restartPolicy": "Never"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn the_scheduler_reads_the_gang_and_requests_as_from_real_spark() {
        let app = AppPods {
            namespace: "tenant-acme",
            job: "ingest",
            app_id: "spark-0123456789abcdef0123",
            driver: (1000, 4 << 30),
            executors: (3, 1500, 6 << 30),
        };
        let driver: Pod = serde_json::from_value(app.driver_pod("u1", "2026-01-05T00:00:00Z")).unwrap();
        assert_eq!(
            observe::driver_conf_map(&driver).as_deref(),
            Some("spark-drv-0123456789abcdef-conf-map")
        );
        let gang = observe::gang(&driver, Some(&app.conf_map())).unwrap().unwrap();
        assert_eq!(gang.executors, 3);
        assert_eq!(gang.executor.cpu, 1500);
        assert_eq!(gang.executor.memory, with_overhead(6 << 30));
        let exec: Pod = serde_json::from_value(app.executor_pod(2, "u2", "2026-01-05T00:00:00Z", "u1", "d")).unwrap();
        assert_eq!(observe::requests(&exec), gang.executor);
        assert_eq!(observe::requests(&driver).cpu, 1000);
    }
}
