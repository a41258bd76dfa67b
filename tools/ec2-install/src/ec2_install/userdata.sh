#!/usr/bin/env bash
# ec2-install's script for the first boot. NixOS's amazon-init runs EC2 user data that
# starts with #! at every boot; this one does the one thing that must happen
# before `ec2-install up` reaches the box over SSH, once: the backup disk. If it
# is blank, a GPT table with one partition named `backup` holding an ext4 file
# system labelled `backup`; a disk that holds anything else is never touched.
# Then a mark file, so that later boots do nothing at all. It never switches
# configurations (`up` does that from the laptop, once) and holds no secret.
set -euo pipefail

# @settings@

export PATH="/run/current-system/sw/bin:$PATH"
STATE_DIR="${ODBOX_EC2_STATE_DIR:-/var/lib/odbox}"
MARK="$STATE_DIR/ec2-install-disk.done"

log() { echo "ec2-install[$BOX]: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The backup volume is attached as $BACKUP_DEVICE; on Nitro instances it shows
# up as an NVMe disk instead, found as the one whole disk of $BACKUP_GB GiB that
# does not hold the root file system (ec2-install refuses equal root and backup sizes).
find_backup_disk() {
    if [[ -n "${ODBOX_BACKUP_DISK:-}" ]]; then
        echo "$ODBOX_BACKUP_DISK"
        return
    fi
    local xen="/dev/xvd${BACKUP_DEVICE#/dev/sd}"
    for candidate in "$BACKUP_DEVICE" "$xen"; do
        if [[ -b $candidate ]]; then
            readlink -f "$candidate"
            return
        fi
    done
    local root_disk want name size type found=()
    root_disk="/dev/$(lsblk -no PKNAME "$(findmnt -no SOURCE /)" 2>/dev/null | head -n1 || true)"
    want=$((BACKUP_GB * 1024 * 1024 * 1024))
    while read -r name size type; do
        if [[ $type == disk && $size == "$want" && $name != "$root_disk" ]]; then
            found+=("$name")
        fi
    done < <(lsblk -dbnpo NAME,SIZE,TYPE)
    if [[ ${#found[@]} -ne 1 ]]; then
        die "found ${#found[@]} disks of ${BACKUP_GB} GiB besides the root disk (${found[*]:-none}); expected exactly one"
    fi
    echo "${found[0]}"
}

partitions_of() {
    lsblk -lnpo NAME,TYPE "$1" | awk '$2 == "part" { print $1 }'
}

# Blank: no signature blkid knows (file system, RAID, partition table), no
# partitions, and only zeros in the first MiB (where every table and superblock starts).
is_blank() {
    local disk=$1 status=0
    blkid -p "$disk" >/dev/null 2>&1 || status=$?
    [[ $status -eq 2 ]] || return 1
    [[ -z "$(partitions_of "$disk")" ]] || return 1
    [[ "$(head -c 1048576 "$disk" | tr -d '\000' | wc -c)" -eq 0 ]]
}

has_backup_partition() {
    local part
    for part in $(partitions_of "$1"); do
        if [[ "$(blkid -p -s PART_ENTRY_NAME -o value "$part" 2>/dev/null)" == backup ]]; then
            return 0
        fi
    done
    return 1
}

format_backup_disk() {
    local disk=$1 part=""
    log "formatting the blank backup disk $disk: GPT, one partition named backup, ext4 labelled backup"
    printf 'label: gpt\ntype=linux, name="backup"\n' | sfdisk --quiet "$disk"
    partx --update "$disk" 2>/dev/null || true
    if command -v udevadm >/dev/null; then udevadm settle || true; fi
    for _ in $(seq 50); do
        part=$(partitions_of "$disk" | head -n1)
        if [[ -n $part && -b $part ]]; then break; fi
        sleep 0.2
    done
    [[ -n $part && -b $part ]] || die "the new partition of $disk did not appear"
    mkfs.ext4 -q -L backup "$part"
}

prepare_backup_disk() {
    local disk
    disk=$(find_backup_disk)
    if is_blank "$disk"; then
        format_backup_disk "$disk"
    elif has_backup_partition "$disk"; then
        log "the backup disk $disk already has its backup partition; left as it is"
    else
        die "the backup disk $disk is not blank and has no partition named backup; left untouched"
    fi
}

# Once done, later boots touch nothing, not even the disks.
if [[ -e $MARK ]]; then
    log "the backup disk was prepared on $(cat "$MARK"); nothing to do"
    exit 0
fi
prepare_backup_disk
mkdir -p "$STATE_DIR"
date -u +%Y-%m-%dT%H:%M:%SZ >"$MARK.tmp"
mv "$MARK.tmp" "$MARK"
log "the backup disk is ready; ec2-install up goes on over SSH"
