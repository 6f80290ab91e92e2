// Initiates the MongoDB replica set rs0 of docker-compose.yml once, then waits
// until it is usable. The mongo-init service runs it with `mongosh --nodb`.
//
// Idempotent: on a set that is already initiated it only waits. It exits 0
// once a primary is elected and a majority of the members (2 of 3) are primary
// or secondary, so that writes with w=majority succeed; it exits 1 if that
// does not happen within two minutes.

const replicaSet = "rs0";
const members = [
    // mongo1 holds the data of the former single mongod (see the volumes in
    // docker-compose.yml), so it is preferred as primary.
    { _id: 0, host: "mongo1:27017", priority: 2 },
    { _id: 1, host: "mongo2:27017", priority: 1 },
    { _id: 2, host: "mongo3:27017", priority: 1 },
];
const timeoutMs = 120000;

// The root account exists on mongo1 only until the others have synced, so
// talk to mongo1 directly. The credentials come from the environment, not the
// command line.
const user = encodeURIComponent(process.env.MONGO_USER || "");
const password = encodeURIComponent(process.env.MONGO_PASSWORD || "");
if (!user || !password) {
    print("mongo-init: MONGO_USER and MONGO_PASSWORD must be set");
    quit(1);
}
// MONGO_TLS_OPTIONS adds the TLS options of docker-compose.tls.yml, starting with "&".
const tlsOptions = process.env.MONGO_TLS_OPTIONS || "";
const admin = connect(`mongodb://${user}:${password}@mongo1:27017/admin?authSource=admin&directConnection=true${tlsOptions}`);

function status() {
    try {
        return admin.adminCommand({ replSetGetStatus: 1 });
    } catch (e) {
        // 94 NotYetInitialized: no configuration yet.
        if (e.code === 94 || e.codeName === "NotYetInitialized") return null;
        throw e;
    }
}

if (status() === null) {
    print(`mongo-init: initiating replica set ${replicaSet} with ${members.map((m) => m.host).join(", ")}`);
    admin.adminCommand({ replSetInitiate: { _id: replicaSet, members } });
} else {
    print(`mongo-init: replica set ${replicaSet} is already initiated`);
}

const deadline = Date.now() + timeoutMs;
let last = "";
while (true) {
    let current = null;
    try {
        current = status();
    } catch (e) {
        last = `status failed: ${e.message}`;
    }
    if (current !== null && current.members) {
        const states = current.members.map((m) => `${m.name}=${m.stateStr}`).join(" ");
        const primary = current.members.find((m) => m.stateStr === "PRIMARY");
        const up = current.members.filter((m) => m.stateStr === "PRIMARY" || m.stateStr === "SECONDARY").length;
        if (states !== last) print(`mongo-init: ${states}`);
        last = states;
        if (primary && up > current.members.length / 2) {
            print(`mongo-init: ready, primary ${primary.name}, ${up} of ${current.members.length} members up`);
            quit(0);
        }
    }
    if (Date.now() > deadline) {
        print(`mongo-init: no primary with a majority of members after ${timeoutMs / 1000} s (${last}); see the logs of mongo1, mongo2 and mongo3`);
        quit(1);
    }
    sleep(1000);
}
