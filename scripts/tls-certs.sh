#!/usr/bin/env bash
# Creates a throwaway certificate authority and certificates for local TLS tests in DIR:
#   ca.crt, ca.key                 the test CA
#   server.crt, server.key,        server certificate for localhost, 127.0.0.1 and ::1, signed by the test CA,
#   server.pem                     also as one PEM file with its key (the form mongod's --tlsCertificateKeyFile takes)
#   client.crt, client.key,        client certificate signed by the test CA, also as PKCS#12 (client.p12)
#   client.p12, client.pem         with the password in client.p12.password, and as one PEM file with its key
#                                  (client.pem, the form MongoDB's tlsCertificateKeyFile takes)
#   other-ca.crt, other-ca.key     a second CA, which signed none of the above, to prove that verification fails
#   other-client.*                 a client certificate signed by the second CA, in the same forms
# Keys are P-256, certificates last TLS_CERT_DAYS days (default 2), and private keys are readable by their owner only.
# Nothing here belongs in git: run it for a test run or a local setup, then throw the folder away.
#
#   scripts/tls-certs.sh DIR [EXTRA_SERVER_NAME...]
# Each EXTRA_SERVER_NAME is added to the server certificate as a DNS name (for example rabbitmq, mongo, ingress).
set -euo pipefail

if (($# < 1)); then
    echo "usage: scripts/tls-certs.sh DIR [EXTRA_SERVER_NAME...]" >&2
    exit 2
fi
dir=$1
shift
days=${TLS_CERT_DAYS:-2}
mkdir -p "$dir"
cd "$dir"
umask 077

# Runs openssl quietly, and shows its output only when it fails.
quiet_openssl() {
    local output
    if ! output=$(openssl "$@" 2>&1); then
        printf 'tls-certs.sh: openssl %s failed:\n%s\n' "$1" "$output" >&2
        return 1
    fi
}

new_key() {
    quiet_openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# Signs NAME.key into NAME.crt with subject CN, issued by the CA in CA.crt and CA.key, with the given extensions.
sign() {
    local name=$1 cn=$2 ca=$3 extensions=$4
    printf '%s\n' "$extensions" >"$name.ext"
    openssl req -new -key "$name.key" -subj "/O=AddOnEvents test/CN=$cn" -out "$name.csr"
    quiet_openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days "$days" \
        -sha256 -extfile "$name.ext" -out "$name.crt"
    rm -f "$name.csr" "$name.ext"
}

new_ca() {
    local name=$1 cn=$2
    new_key "$name.key"
    openssl req -x509 -new -key "$name.key" -subj "/O=AddOnEvents test/CN=$cn" -days "$days" -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$name.crt"
}

new_client() {
    local name=$1 ca=$2
    new_key "$name.key"
    sign "$name" "addonevents-service" "$ca" \
        "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
    openssl rand -hex 16 >"$name.p12.password"
    openssl pkcs12 -export -in "$name.crt" -inkey "$name.key" -passout "file:$name.p12.password" -out "$name.p12"
    cat "$name.crt" "$name.key" >"$name.pem"
}

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for extra in "$@"; do
    san+=",DNS:$extra"
done

new_ca ca "AddOnEvents test CA"
new_ca other-ca "AddOnEvents other CA"

# Client authentication too, because MongoDB replica set members present their server certificate to each other.
new_key server.key
sign server localhost ca \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san"
cat server.crt server.key >server.pem

new_client client ca
new_client other-client other-ca
rm -f ./*.srl

# Certificates are public, and the RabbitMQ node and the tests read them.
chmod 644 ./*.crt
