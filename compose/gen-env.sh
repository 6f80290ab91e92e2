#!/usr/bin/env bash
# Generate the env file for compose/docker-compose.yml with fresh random secrets.
#
# Usage: bash compose/gen-env.sh [OUTPUT]
#   OUTPUT defaults to .env beside this script. An existing file is never
#   overwritten, because replacing the master key or the database passwords
#   would lock the services out of data that is already stored.
#
# The output is .env.example with each empty value filled in, so the comments
# there describe every variable. The file is created with mode 600.
#
# The script also writes mongo-keyfile beside OUTPUT (mode 600) if it does not
# exist yet: the key with which the MongoDB replica set members authenticate
# to each other. docker-compose.yml reads it from compose/mongo-keyfile. When
# OUTPUT exists but the keyfile does not, as in a stack set up before the
# replica set, the script writes only the keyfile.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
template="$script_dir/.env.example"
output=${1:-"$script_dir/.env"}
keyfile="$(dirname "$output")/mongo-keyfile"

if ! command -v openssl > /dev/null; then
    echo "error: openssl not found. Install it, for example with 'apt-get install openssl'." >&2
    exit 1
fi

# Writes the replica set keyfile unless it exists: 756 random bytes in base64,
# within the 6 to 1024 characters that mongod accepts. All members must share
# it, so an existing file is kept.
write_keyfile() {
    if [[ -e "$keyfile" ]]; then
        return 0
    fi
    local key
    key=$(openssl rand -base64 756)
    (
        umask 077
        set -o noclobber
        printf '%s\n' "$key" > "$keyfile"
    )
    chmod 600 "$keyfile"
    echo "Wrote $keyfile (mode 600), the MongoDB replica set keyfile."
}

if [[ -e "$output" ]]; then
    if [[ ! -e "$keyfile" ]]; then
        write_keyfile
        echo "Kept the existing $output."
        exit 0
    fi
    echo "error: $output already exists. Delete or move it first if you mean to replace every secret." >&2
    exit 1
fi
if [[ ! -r "$template" ]]; then
    echo "error: template $template is missing or unreadable." >&2
    exit 1
fi

# Passwords are hex because the MongoDB password goes into a connection string
# without URL encoding.
rabbitmq_password=$(openssl rand -hex 24)
mongo_password=$(openssl rand -hex 24)
admin_token=$(openssl rand -hex 32)
token_signing_key=$(openssl rand -base64 32)
user_id_key=$(openssl rand -base64 32)
master_key=$(openssl rand -base64 32)
fingerprint_key=$(openssl rand -base64 32)

# The PEM form of the sealing key stays in this variable and is never written
# to disk. Both DER forms are derived from the same key.
sealing_pem=$(openssl ecparam -name prime256v1 -genkey -noout)
sealing_private_key=$(printf '%s\n' "$sealing_pem" | openssl pkcs8 -topk8 -nocrypt -outform DER | openssl base64 -A)
sealing_public_key=$(printf '%s\n' "$sealing_pem" | openssl pkey -pubout -outform DER | openssl base64 -A)
unset sealing_pem

# Prints the generated value for a variable name, or fails for a name that this
# script does not generate.
generated_value() {
    case "$1" in
        RABBITMQ_PASSWORD) printf '%s' "$rabbitmq_password" ;;
        MONGO_PASSWORD) printf '%s' "$mongo_password" ;;
        SEALING_PRIVATE_KEY) printf '%s' "$sealing_private_key" ;;
        SEALING_PUBLIC_KEY) printf '%s' "$sealing_public_key" ;;
        MASTER_KEY_MK1) printf '%s' "$master_key" ;;
        FINGERPRINT_KEY) printf '%s' "$fingerprint_key" ;;
        ADMIN_TOKEN) printf '%s' "$admin_token" ;;
        TOKEN_SIGNING_KEY) printf '%s' "$token_signing_key" ;;
        USER_ID_KEY) printf '%s' "$user_id_key" ;;
        *) return 1 ;;
    esac
}

filled_count=0
content=""
while IFS= read -r line || [[ -n "$line" ]]; do
    if [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=$ ]]; then
        name=${BASH_REMATCH[1]}
        if ! value=$(generated_value "$name"); then
            echo "error: $template lists $name without a value, and gen-env.sh has no generator for it." >&2
            exit 1
        fi
        line="$name=$value"
        filled_count=$((filled_count + 1))
    fi
    content+="$line"$'\n'
done < "$template"

# generated_value handles nine names. Any other count means that the template
# and this script disagree, so the file would fail compose's checks.
if ((filled_count != 9)); then
    echo "error: filled $filled_count empty values in $template, expected 9." >&2
    exit 1
fi

# umask 077 makes the file private from the moment it exists. noclobber makes
# the write fail if another process created the file after the check above.
umask 077
set -o noclobber
printf '%s' "$content" > "$output"
chmod 600 "$output"
echo "Wrote $output (mode 600) with $filled_count generated secrets."
write_keyfile
