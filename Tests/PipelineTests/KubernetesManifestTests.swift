import Foundation
import Pipeline
import PipelineModel
import Testing
import Yams

/// deploy/ (Kustomize: base, an example overlay, the optional KEDA variant) checked two ways, as no
/// cluster, kubectl or kustomize runs here: schema validity with `kubernetes-validate` (PyPI, the
/// Kubernetes OpenAPI schemas; `make test` installs it into .venv and sets STREAMFIRST_PYTHON), and
/// against the code — the probes hit the ports and paths the workers serve, the commands are
/// executables of Package.swift, the mounted ConfigMap is the pipelines/ file and loads and builds
/// every stage, shutdown fits the grace period, scaling matches the partitions and consumer groups.
@Suite struct KubernetesManifestTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let deploy = root.appendingPathComponent("deploy")
    static let pipelineFile = root.appendingPathComponent("pipelines/iot-sensors-postgres.yaml").path

    /// Every document of a YAML file (`---`-separated).
    static func documents(_ path: String) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try Yams.load_all(yaml: text).compactMap { $0 as? [String: Any] }
    }

    /// The resources of a kustomization, followed recursively (directories are kustomizations).
    static func resources(of directory: URL) throws -> [(file: String, object: [String: Any])] {
        let k = try #require(try documents(directory.appendingPathComponent("kustomization.yaml").path).first)
        var out: [(String, [String: Any])] = []
        for r in k["resources"] as? [String] ?? [] {
            let url = directory.appendingPathComponent(r).standardizedFileURL
            var isDirectory: ObjCBool = false
            #expect(
                FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory),
                "\(directory.lastPathComponent)/kustomization.yaml lists \(r), which does not exist")
            if isDirectory.boolValue {
                out += try resources(of: url)
            } else if FileManager.default.fileExists(atPath: url.path) {
                out += try documents(url.path).map { (url.path, $0) }
            }
        }
        return out
    }

    static func named(_ all: [(file: String, object: [String: Any])], _ kind: String, _ name: String) -> [String: Any]? {
        all.first { $0.object["kind"] as? String == kind && (($0.object["metadata"] as? [String: Any])?["name"] as? String) == name }?
            .object
    }

    static func executables() throws -> Set<String> {
        let text = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        let regex = try NSRegularExpression(pattern: #"\.executable\(name: "([^"]+)""#)
        let ns = text as NSString
        return Set(regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range(at: 1)) })
    }

    static func container(_ deployment: [String: Any]) throws -> [String: Any] {
        let spec = try #require(deployment["spec"] as? [String: Any])
        let pod = try #require((spec["template"] as? [String: Any])?["spec"] as? [String: Any])
        return try #require((pod["containers"] as? [[String: Any]])?.first)
    }

    static func podSpec(_ deployment: [String: Any]) throws -> [String: Any] {
        let spec = try #require(deployment["spec"] as? [String: Any])
        return try #require((spec["template"] as? [String: Any])?["spec"] as? [String: Any])
    }

    static func env(_ container: [String: Any]) -> [String: Any] {
        var out: [String: Any] = [:]
        for e in container["env"] as? [[String: Any]] ?? [] {
            if let n = e["name"] as? String { out[n] = e["value"] ?? e["valueFrom"] ?? NSNull() }
        }
        return out
    }

    static func probe(_ container: [String: Any], _ name: String) -> (path: String?, port: Int?) {
        let get = (container[name] as? [String: Any])?["httpGet"] as? [String: Any]
        return (get?["path"] as? String, get?["port"] as? Int)
    }

    @Test func everyKustomizationResourceExists() throws {
        for dir in ["base", "overlays/example", "keda"] {
            let all = try Self.resources(of: Self.deploy.appendingPathComponent(dir))
            #expect(!all.isEmpty, "\(dir): no resources")
        }
        // The KEDA variant deletes exactly the base's HPAs (patches naming a missing object fail in kustomize).
        let base = try Self.resources(of: Self.deploy.appendingPathComponent("base"))
        let keda = try #require(try Self.documents(Self.deploy.appendingPathComponent("keda/kustomization.yaml").path).first)
        // The ScaledObjects land in the namespace of the Deployments they scale.
        let overlay = try #require(try Self.documents(Self.deploy.appendingPathComponent("overlays/example/kustomization.yaml").path).first)
        #expect(keda["namespace"] as? String == overlay["namespace"] as? String)
        for p in keda["patches"] as? [[String: Any]] ?? [] {
            let patchText = try #require(p["patch"] as? String)
            let patch = try #require(try Yams.load(yaml: patchText) as? [String: Any])
            let name = try #require((patch["metadata"] as? [String: Any])?["name"] as? String)
            let kind = try #require(patch["kind"] as? String)
            #expect(Self.named(base, kind, name) != nil, "keda patch names \(name), not in base")
        }
    }

    @Test func manifestsAreValidKubernetesObjects() async throws {
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["STREAMFIRST_PYTHON"], Self.root.appendingPathComponent(".venv/bin/python").path].compactMap { $0 }
        let python = try #require(
            candidates.first { FileManager.default.isExecutableFile(atPath: $0) },
            "no Python with kubernetes-validate: run `make test` (it creates .venv) or set STREAMFIRST_PYTHON")
        var files: [String] = []
        for dir in ["base", "overlays/example", "keda"] {
            files += try Self.resources(of: Self.deploy.appendingPathComponent(dir)).map(\.file)
        }
        files = Array(Set(files)).sorted()
        let result = try await runProcess(python, ["-m", "kubernetes_validate", "--strict", "--no-warn"] + files)
        #expect(result.status == 0, "kubernetes-validate: \(result.stdout.joined(separator: "\n")) \(result.stderr)")
        // Every Kubernetes object passed (KEDA's ScaledObject is a CRD without a schema there).
        let objects = try files.flatMap { try Self.documents($0) }.filter { ($0["apiVersion"] as? String)?.hasPrefix("keda.sh/") == false }
        #expect(result.stdout.filter { $0.contains(" passed ") }.count == objects.count, "\(result.stdout)")

        // …and the validator does refuse a broken object: the validate Deployment with a port name as containerPort.
        let broken = FileManager.default.temporaryDirectory.appendingPathComponent("sf-k8s-broken-\(UUID().uuidString.prefix(8)).yaml")
        defer { try? FileManager.default.removeItem(at: broken) }
        let text = try String(contentsOf: Self.deploy.appendingPathComponent("base/validate.yaml"), encoding: .utf8)
        try text.replacingOccurrences(of: "containerPort: 9102", with: "containerPort: http").write(
            to: broken, atomically: true, encoding: .utf8)
        let refused = try await runProcess(python, ["-m", "kubernetes_validate", "--strict", broken.path])
        #expect(refused.status != 0)
    }

    /// The ConfigMap's files laid out as the Deployments mount them, in a temporary directory.
    static func mountedPipeline(
        _ all: [(file: String, object: [String: Any])], deployment: [String: Any]
    ) throws -> (dir: URL, pipeline: String) {
        let container = try container(deployment)
        let pipelinePath = try #require(env(container)["PIPELINE"] as? String)
        let mount = try #require(
            (container["volumeMounts"] as? [[String: Any]])?.first { pipelinePath.hasPrefix(($0["mountPath"] as? String ?? "") + "/") })
        let mountPath = try #require(mount["mountPath"] as? String)
        let volume = try #require(
            (try podSpec(deployment)["volumes"] as? [[String: Any]])?.first { $0["name"] as? String == mount["name"] as? String })
        let configMap = try #require(volume["configMap"] as? [String: Any])
        let configMapName = try #require(configMap["name"] as? String)
        let cm = try #require(named(all, "ConfigMap", configMapName))
        let data = try #require(cm["data"] as? [String: String])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sf-k8s-\(UUID().uuidString.prefix(8))")
        for item in configMap["items"] as? [[String: Any]] ?? [] {
            let key = try #require(item["key"] as? String)
            let itemPath = try #require(item["path"] as? String)
            let file = dir.appendingPathComponent(itemPath)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            let content = try #require(data[key], "ConfigMap has no key \(key)")
            try content.write(to: file, atomically: true, encoding: .utf8)
        }
        return (dir, dir.appendingPathComponent(String(pipelinePath.dropFirst(mountPath.count + 1))).path)
    }

    @Test func theConfigMapCarriesThePipelinesFilesVerbatim() throws {
        let all = try Self.resources(of: Self.deploy.appendingPathComponent("base"))
        let cm = try #require(Self.named(all, "ConfigMap", "streamfirst-pipeline"))
        let data = try #require(cm["data"] as? [String: String])
        for (key, file) in [
            ("iot-sensors-postgres.yaml", "pipelines/iot-sensors-postgres.yaml"),
            ("iot-reading.json", "pipelines/schemas/iot-reading.json"), ("sensors.csv", "pipelines/tables/sensors.csv"),
        ] {
            let original = try String(contentsOf: Self.root.appendingPathComponent(file), encoding: .utf8)
            #expect(data[key] == original, "the ConfigMap's \(key) differs from \(file): run deploy/sync-pipeline-configmap.sh")
        }
    }

    @Test func workersServeTheirProbesAndLoadTheMountedPipeline() throws {
        let all = try Self.resources(of: Self.deploy.appendingPathComponent("base"))
        let executables = try Self.executables()
        let reference = try PipelineSpec.load(file: Self.pipelineFile, environment: [:])
        for stage in PipelineSpec.StageName.allCases {
            let deployment = try #require(
                Self.named(all, "Deployment", "streamfirst-\(stage.rawValue)"), "no Deployment for \(stage.rawValue)")
            let c = try Self.container(deployment)
            let command = try #require(c["command"] as? [String])
            #expect(command == [stage.rawValue])
            #expect(executables.contains(stage.rawValue), "\(stage.rawValue) is not an executable product of Package.swift")
            let env = Self.env(c)
            // The worker listens on HTTP_PORT (else its stage default) at HTTP_HOST (else loopback: unreachable for the kubelet).
            let port = PipelineSpec.defaultHTTPPort(stage)
            #expect(env["HTTP_PORT"] as? String == String(port))
            #expect(env["HTTP_HOST"] as? String == "0.0.0.0")
            #expect((c["ports"] as? [[String: Any]])?.first?["containerPort"] as? Int == port)
            #expect(Self.probe(c, "livenessProbe") == ("/healthz", port))
            #expect(Self.probe(c, "readinessProbe") == ("/readyz", port))
            #expect(
                ((env["KAFKA_BROKERS"] as? [String: Any])?["configMapKeyRef"] as? [String: Any])?["name"] as? String == "streamfirst-kafka")

            let resources = try #require(c["resources"] as? [String: Any])
            for kind in ["requests", "limits"] {
                let r = try #require(resources[kind] as? [String: Any], "\(stage.rawValue): no resource \(kind)")
                #expect(r["cpu"] != nil && r["memory"] != nil)
            }
            let pod = try Self.podSpec(deployment)
            #expect((pod["securityContext"] as? [String: Any])?["runAsNonRoot"] as? Bool == true)
            #expect((c["securityContext"] as? [String: Any])?["readOnlyRootFilesystem"] as? Bool == true)
            // Graceful shutdown: the worker's own deadline ends before the kubelet's SIGKILL.
            let grace = try #require(pod["terminationGracePeriodSeconds"] as? Int)
            let shutdownMs = try reference.stage(stage).shutdownTimeoutMs
            #expect(Int64(grace) * 1000 > shutdownMs)

            // The mounted files load as the pipelines/ file does, and build the stage (schema, table, sink).
            let (dir, pipeline) = try Self.mountedPipeline(all, deployment: deployment)
            defer { try? FileManager.default.removeItem(at: dir) }
            let state = dir.appendingPathComponent("state").path
            let mounted = try PipelineSpec.load(
                file: pipeline, environment: ["KAFKA_BROKERS": "kafka:9092", "STREAMFIRST_STATE_DIR": state])
            #expect(mounted.name == reference.name)
            #expect(mounted.topics == reference.topics)
            let group = try reference.stage(stage).group
            #expect(try mounted.stage(stage).group == group)
            _ = try BuiltStage.build(stage, spec: mounted, logger: .init(label: "test"))

            // Writable paths are volumes: ingest's checkpoint directory.
            if stage == .ingest {
                let stateDir = try #require(env["STREAMFIRST_STATE_DIR"] as? String)
                let mounts = c["volumeMounts"] as? [[String: Any]] ?? []
                let m = try #require(mounts.first { $0["mountPath"] as? String == stateDir }, "ingest's state_dir is not a volume")
                #expect(m["readOnly"] as? Bool != true)
                let volume = (pod["volumes"] as? [[String: Any]])?.first { $0["name"] as? String == m["name"] as? String }
                let claim = try #require((volume?["persistentVolumeClaim"] as? [String: Any])?["claimName"] as? String)
                #expect(Self.named(all, "PersistentVolumeClaim", claim) != nil)
            }
            if stage == .persist {
                let ref = (env["POSTGRES_URL"] as? [String: Any])?["secretKeyRef"] as? [String: Any]
                #expect(ref?["name"] as? String == "streamfirst-postgres", "the database URL comes from a Secret")
            }
        }
        // The dashboard: its own port, probes and Service.
        let dashboard = try #require(Self.named(all, "Deployment", "streamfirst-dashboard"))
        let dc = try Self.container(dashboard)
        #expect(dc["command"] as? [String] == ["dashboard"])
        #expect(Self.probe(dc, "livenessProbe") == ("/healthz", 9105))
        #expect(Self.probe(dc, "readinessProbe") == ("/readyz", 9105))
        let service = try #require(Self.named(all, "Service", "streamfirst-dashboard"))
        #expect(((service["spec"] as? [String: Any])?["ports"] as? [[String: Any]])?.first?["port"] as? Int == 9105)
        #expect(executables.contains("dashboard"), "the dashboard Deployment runs an executable Package.swift builds")
        // The pipeline file's dashboard section is what the pod serves (HTTP_PORT overrides its port).
        let dashboardEnv = Dictionary(
            uniqueKeysWithValues: ((dc["env"] as? [[String: Any]]) ?? []).compactMap { e in
                (e["name"] as? String).map { ($0, e["value"] as? String) }
            })
        #expect(dashboardEnv["HTTP_PORT"] == "9105")
        #expect(dashboardEnv["HTTP_HOST"] == "0.0.0.0")
    }

    @Test func scalingMatchesPartitionsAndConsumerGroups() throws {
        let base = try Self.resources(of: Self.deploy.appendingPathComponent("base"))
        let keda = try Self.documents(Self.deploy.appendingPathComponent("keda/scaledobjects.yaml").path)
        let spec = try PipelineSpec.load(file: Self.pipelineFile, environment: [:])
        for stage in [PipelineSpec.StageName.validate, .process, .persist] {
            let common = try spec.stage(stage)
            let input = try #require(common.input)
            let deployment = try #require(Self.named(base, "Deployment", "streamfirst-\(stage.rawValue)"))
            let hpa = try #require(
                Self.named(base, "HorizontalPodAutoscaler", "streamfirst-\(stage.rawValue)"), "no HPA for \(stage.rawValue)")
            let hs = try #require(hpa["spec"] as? [String: Any])
            #expect((hs["scaleTargetRef"] as? [String: Any])?["name"] as? String == "streamfirst-\(stage.rawValue)")
            let max = try #require(hs["maxReplicas"] as? Int)
            #expect(max <= input.partitions, "\(stage.rawValue): replicas beyond \(input.partitions) partitions idle")
            let metric = (hs["metrics"] as? [[String: Any]])?.first?["resource"] as? [String: Any]
            #expect(metric?["name"] as? String == "cpu")
            // CPU utilisation is relative to the request.
            let container = try Self.container(deployment)
            #expect(((container["resources"] as? [String: Any])?["requests"] as? [String: Any])?["cpu"] != nil)

            let scaled = try #require(
                keda.first { (($0["metadata"] as? [String: Any])?["name"] as? String) == "streamfirst-\(stage.rawValue)" })
            let ks = try #require(scaled["spec"] as? [String: Any])
            #expect((ks["scaleTargetRef"] as? [String: Any])?["name"] as? String == "streamfirst-\(stage.rawValue)")
            let maxCount = try #require(ks["maxReplicaCount"] as? Int)
            #expect(maxCount <= input.partitions)
            let trigger = try #require((ks["triggers"] as? [[String: Any]])?.first)
            #expect(trigger["type"] as? String == "kafka")
            let meta = try #require(trigger["metadata"] as? [String: Any])
            #expect(meta["consumerGroup"] as? String == common.group, "the group the \(stage.rawValue) worker joins: <pipeline>.<stage>")
            #expect(common.group == "\(spec.name).\(stage.rawValue)")
            #expect(meta["topic"] as? String == input.name)
            let fromEnv = try #require(meta["bootstrapServersFromEnv"] as? String)
            #expect(Self.env(container)[fromEnv] != nil, "KEDA reads \(fromEnv) from the container's environment")
        }
        // Ingest does not scale (one source, one checkpoint).
        #expect(Self.named(base, "HorizontalPodAutoscaler", "streamfirst-ingest") == nil)
    }
}
