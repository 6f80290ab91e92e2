#!/usr/bin/env node
// Validates rendered Kubernetes manifests (the output of `kubectl kustomize`) offline.
//
//   node scripts/validate-k8s.mjs RENDERED.yaml [LABEL]
//
// scripts/validate-k8s.sh renders the overlay, installs the pinned packages of
// scripts/k8s-validate and calls this script. Every object is checked in two ways:
//  1. schema: against the JSON schema of its apiVersion and kind, from the npm
//     packages kubernetes-models (Kubernetes API) and @kubernetes-models/keda
//     (ScaledObject, TriggerAuthentication). An unknown apiVersion or kind is an error.
//  2. rules of this project that no schema expresses: probes on the health
//     endpoints, resources, a locked-down securityContext, no Secret or secret
//     value in the manifests, and references (ConfigMaps, Services, scale
//     targets, TriggerAuthentications, selectors) that resolve inside the render.
// Each problem is printed as `error: <Kind> <namespace>/<name>: <field>: <message>`.
// Exits 1 on any problem, 2 on bad usage or an unreadable file.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(new URL("./k8s-validate/package.json", import.meta.url));
const YAML = require("yaml");

const [file, label = file] = process.argv.slice(2);
if (!file) {
    console.error("usage: node scripts/validate-k8s.mjs RENDERED.yaml [LABEL]");
    process.exit(2);
}

const HEALTH_PORT = 8080;
// Environment variable names whose values are secrets (see deploy/base/secrets/*.example.env).
const SECRET_NAME = /(password|secret|token|privatekey|publickey|connectionstring|fingerprint__key|masterkeys__keys__)/i;

const errors = [];
let current = "";
const fail = (field, message) => errors.push(`${current}: ${field ? field + ": " : ""}${message}`);

// ---------------------------------------------------------------------------------------------
// Parse. YAML 1.1, as Kubernetes reads manifests, so that an unquoted `on` or `no` becomes the
// boolean that the API server would see.
let text;
try {
    text = readFileSync(file, "utf8");
} catch (e) {
    console.error(`error: cannot read ${file}: ${e.message}`);
    process.exit(2);
}
const objects = [];
YAML.parseAllDocuments(text, { version: "1.1" }).forEach((doc, index) => {
    current = `${label} document ${index + 1}`;
    if (doc.errors.length > 0) {
        doc.errors.forEach((e) => fail("", `YAML: ${e.message.split("\n")[0]}`));
        return;
    }
    const value = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return;
    if (typeof value !== "object" || Array.isArray(value)) {
        fail("", "is not a Kubernetes object (a YAML mapping)");
        return;
    }
    objects.push(value);
});

const nameOf = (o) => `${o.kind ?? "<no kind>"} ${o.metadata?.namespace ? o.metadata.namespace + "/" : ""}${o.metadata?.name ?? "<no name>"}`;

// ---------------------------------------------------------------------------------------------
// 1. Schema validation with the model class of each apiVersion and kind.
const API_VERSION = /^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?\/)?v[0-9]+(?:(?:alpha|beta)[0-9]+)?$/;

function modelClass(apiVersion, kind) {
    if (typeof apiVersion !== "string" || !API_VERSION.test(apiVersion)) return null;
    const packageName = apiVersion.startsWith("keda.sh/") ? "@kubernetes-models/keda" : "kubernetes-models";
    let module;
    try {
        module = require(`${packageName}/${apiVersion}`);
    } catch {
        return null;
    }
    const model = Object.hasOwn(module, kind) ? module[kind] : undefined;
    // Only top-level resources carry apiVersion and kind; this rejects types like DeploymentSpec.
    return model && model.apiVersion === apiVersion && model.kind === kind ? model : null;
}

// "/spec/template/spec/containers/0/ports/0" -> "spec.template.spec.containers[0].ports[0]"
function fieldPath(instancePath, extra) {
    const parts = instancePath.split("/").slice(1).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    if (extra !== undefined) parts.push(extra);
    let out = "";
    for (const p of parts) out += /^[0-9]+$/.test(p) ? `[${p}]` : /^[A-Za-z0-9_-]+$/.test(p) ? (out ? "." : "") + p : `[${JSON.stringify(p)}]`;
    return out || "(object)";
}

function describe(e) {
    switch (e.keyword) {
        case "required":
            return [fieldPath(e.instancePath, e.params.missingProperty), "is required"];
        case "enum":
            return [fieldPath(e.instancePath), `must be one of ${e.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`];
        case "additionalProperties":
            return [fieldPath(e.instancePath, e.params.additionalProperty), "is not a known field"];
        default:
            return [fieldPath(e.instancePath), e.message ?? e.keyword];
    }
}

const counts = new Map();
for (const o of objects) {
    current = `${label}: ${nameOf(o)}`;
    counts.set(o.kind, (counts.get(o.kind) ?? 0) + 1);
    if (!o.apiVersion || !o.kind) {
        fail(o.apiVersion ? "kind" : "apiVersion", "is required");
        continue;
    }
    const Model = modelClass(o.apiVersion, o.kind);
    if (!Model) {
        fail("kind", `no schema for apiVersion ${JSON.stringify(o.apiVersion)} with kind ${JSON.stringify(o.kind)} (a typo, or an API that Kubernetes or KEDA does not serve)`);
        continue;
    }
    try {
        new Model(o).validate();
    } catch (e) {
        if (!Array.isArray(e.errors)) throw e;
        // ajv reports a failed oneOf/anyOf once per branch; print each field and message once.
        const seen = new Set();
        for (const err of e.errors) {
            const [field, message] = describe(err);
            if (seen.has(field + message)) continue;
            seen.add(field + message);
            fail(field, message);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Project rules and references.
const byKey = new Map();
const key = (kind, namespace, name) => `${kind}|${namespace ?? ""}|${name}`;
for (const o of objects) {
    current = `${label}: ${nameOf(o)}`;
    if (typeof o.metadata?.name !== "string" || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(o.metadata.name)) {
        fail("metadata.name", "must be a lowercase DNS name");
        continue;
    }
    const k = key(o.kind, o.metadata.namespace, o.metadata.name);
    if (byKey.has(k)) fail("metadata.name", "is used by two objects of this kind");
    byKey.set(k, o);
}
const find = (kind, namespace, name) => byKey.get(key(kind, namespace, name));
const ofKind = (kind) => objects.filter((o) => o.kind === kind);
const matches = (selector, labels) =>
    selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

const scaled = new Set();
for (const o of [...ofKind("HorizontalPodAutoscaler"), ...ofKind("ScaledObject")]) {
    const target = o.spec?.scaleTargetRef ?? {};
    current = `${label}: ${nameOf(o)}`;
    const kind = target.kind ?? "Deployment";
    if (!find(kind, o.metadata?.namespace, target.name)) {
        fail("spec.scaleTargetRef.name", `${kind} ${JSON.stringify(target.name)} is not in this render`);
    }
    scaled.add(key(kind, o.metadata?.namespace, target.name));
}

const requiredSecrets = new Set();

for (const o of ofKind("Secret")) {
    current = `${label}: ${nameOf(o)}`;
    fail("", "Secrets are never committed: create them with `kubectl create secret generic ... --from-env-file` (docs/deploy.md)");
}

for (const o of ofKind("ConfigMap")) {
    current = `${label}: ${nameOf(o)}`;
    for (const k of Object.keys(o.data ?? {})) {
        if (SECRET_NAME.test(k)) fail(`data.${k}`, "looks like a secret; it belongs in a Secret, not a ConfigMap");
    }
}

function checkProbe(container, probeName, path, field) {
    const probe = container[probeName];
    if (!probe?.httpGet) {
        fail(`${field}.${probeName}`, `is required: an httpGet probe on ${path} port ${HEALTH_PORT}`);
        return;
    }
    if (probe.httpGet.path !== path) fail(`${field}.${probeName}.httpGet.path`, `must be ${path}`);
    const port = probe.httpGet.port;
    const resolved = typeof port === "string" ? container.ports?.find((p) => p.name === port)?.containerPort : port;
    if (resolved !== HEALTH_PORT) fail(`${field}.${probeName}.httpGet.port`, `must be ${HEALTH_PORT} or a named port for it (is ${JSON.stringify(port)})`);
}

for (const o of ofKind("Deployment")) {
    current = `${label}: ${nameOf(o)}`;
    const ns = o.metadata?.namespace;
    const pod = o.spec?.template?.spec ?? {};
    const podLabels = o.spec?.template?.metadata?.labels;
    if (!matches(o.spec?.selector?.matchLabels, podLabels)) fail("spec.selector.matchLabels", "must select the labels of spec.template");
    if (o.spec?.replicas !== undefined && scaled.has(key("Deployment", ns, o.metadata.name))) {
        fail("spec.replicas", "must be left out: an autoscaler owns the replica count, and kubectl apply would reset it");
    }
    if (pod.automountServiceAccountToken !== false) fail("spec.template.spec.automountServiceAccountToken", "must be false");
    (pod.containers ?? []).forEach((c, i) => {
        const field = `spec.template.spec.containers[${i}]`;
        checkProbe(c, "readinessProbe", "/health/ready", field);
        checkProbe(c, "livenessProbe", "/health/live", field);
        for (const kind of ["requests", "limits"]) {
            for (const resource of ["cpu", "memory"]) {
                if (c.resources?.[kind]?.[resource] === undefined) fail(`${field}.resources.${kind}.${resource}`, "is required");
            }
        }
        const sc = c.securityContext ?? {};
        if (sc.runAsNonRoot !== true && pod.securityContext?.runAsNonRoot !== true) fail(`${field}.securityContext.runAsNonRoot`, "must be true here or in the pod's securityContext");
        if (sc.allowPrivilegeEscalation !== false) fail(`${field}.securityContext.allowPrivilegeEscalation`, "must be false");
        if (sc.readOnlyRootFilesystem !== true) fail(`${field}.securityContext.readOnlyRootFilesystem`, "must be true");
        if (!sc.capabilities?.drop?.includes("ALL")) fail(`${field}.securityContext.capabilities.drop`, 'must contain "ALL"');
        if (typeof c.image !== "string" || !/(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$/.test(c.image.replace(/^[^/]*\//, "")) || /:latest$/.test(c.image)) {
            fail(`${field}.image`, `must name a release tag or a digest, not ${JSON.stringify(c.image)} (set images: in the overlay)`);
        }
        (c.env ?? []).forEach((e, j) => {
            if (e.value !== undefined && SECRET_NAME.test(e.name ?? "")) fail(`${field}.env[${j}].value`, `${e.name} is a secret: take it from a Secret with valueFrom.secretKeyRef`);
        });
        (c.envFrom ?? []).forEach((e, j) => {
            if (e.configMapRef && !e.configMapRef.optional && !find("ConfigMap", ns, e.configMapRef.name)) {
                fail(`${field}.envFrom[${j}].configMapRef.name`, `ConfigMap ${JSON.stringify(e.configMapRef.name)} is not in this render`);
            }
            if (e.secretRef?.name) requiredSecrets.add(`${ns ? ns + "/" : ""}${e.secretRef.name}`);
        });
    });
    for (const volume of pod.volumes ?? []) {
        if (volume.secret?.secretName && !volume.secret.optional) requiredSecrets.add(`${ns ? ns + "/" : ""}${volume.secret.secretName} (files)`);
    }
}

const podsMatching = (ns, selector) =>
    ofKind("Deployment").filter((d) => d.metadata?.namespace === ns && matches(selector, d.spec?.template?.metadata?.labels));

for (const o of ofKind("Service")) {
    current = `${label}: ${nameOf(o)}`;
    const targets = podsMatching(o.metadata?.namespace, o.spec?.selector);
    if (targets.length === 0) {
        fail("spec.selector", "selects the pods of no Deployment in this render");
        continue;
    }
    (o.spec?.ports ?? []).forEach((p, i) => {
        if (typeof p.targetPort !== "string") return;
        const named = targets.every((d) => d.spec.template.spec.containers?.some((c) => c.ports?.some((cp) => cp.name === p.targetPort)));
        if (!named) fail(`spec.ports[${i}].targetPort`, `no container port is named ${JSON.stringify(p.targetPort)}`);
    });
}

for (const o of ofKind("PodDisruptionBudget")) {
    current = `${label}: ${nameOf(o)}`;
    if (podsMatching(o.metadata?.namespace, o.spec?.selector?.matchLabels).length === 0) fail("spec.selector.matchLabels", "selects the pods of no Deployment in this render");
}

for (const o of ofKind("Ingress")) {
    current = `${label}: ${nameOf(o)}`;
    (o.spec?.rules ?? []).forEach((rule, i) =>
        (rule.http?.paths ?? []).forEach((path, j) => {
            const field = `spec.rules[${i}].http.paths[${j}].backend.service`;
            const backend = path.backend?.service;
            const service = backend && find("Service", o.metadata?.namespace, backend.name);
            if (!service) {
                fail(`${field}.name`, `Service ${JSON.stringify(backend?.name)} is not in this render`);
                return;
            }
            const port = backend.port ?? {};
            if (!(service.spec?.ports ?? []).some((p) => (port.name !== undefined ? p.name === port.name : p.port === port.number))) {
                fail(`${field}.port`, `Service ${backend.name} has no port ${JSON.stringify(port.name ?? port.number)}`);
            }
        }),
    );
}

for (const o of ofKind("Ingress")) {
    for (const tls of o.spec?.tls ?? []) if (tls.secretName) requiredSecrets.add(`${o.metadata?.namespace ? o.metadata.namespace + "/" : ""}${tls.secretName} (TLS)`);
}

for (const o of ofKind("ScaledObject")) {
    current = `${label}: ${nameOf(o)}`;
    (o.spec?.triggers ?? []).forEach((t, i) => {
        const ref = t.authenticationRef;
        if (!ref) return;
        const kind = ref.kind ?? "TriggerAuthentication";
        const found = kind === "ClusterTriggerAuthentication" ? find(kind, undefined, ref.name) : find(kind, o.metadata?.namespace, ref.name);
        if (!found) fail(`spec.triggers[${i}].authenticationRef.name`, `${kind} ${JSON.stringify(ref.name)} is not in this render`);
    });
}

for (const o of ofKind("TriggerAuthentication")) {
    for (const ref of o.spec?.secretTargetRef ?? []) requiredSecrets.add(`${o.metadata?.namespace ? o.metadata.namespace + "/" : ""}${ref.name}`);
}

// ---------------------------------------------------------------------------------------------
if (objects.length === 0) errors.push(`${label}: the render holds no objects`);
const version = (name) => require(`${name}/package.json`).version;
if (errors.length > 0) {
    for (const e of errors) console.error(`error: ${e}`);
    console.error(`${label}: ${errors.length} problem(s) in ${objects.length} objects`);
    process.exit(1);
}
const summary = [...counts].map(([kind, n]) => `${n} ${kind}`).join(", ");
console.log(`${label}: ${objects.length} objects valid (${summary}); schemas: kubernetes-models ${version("kubernetes-models")}, @kubernetes-models/keda ${version("@kubernetes-models/keda")}`);
console.log(`${label}: Secrets to create before the pods can start: ${[...requiredSecrets].sort().join(", ") || "none"}`);
