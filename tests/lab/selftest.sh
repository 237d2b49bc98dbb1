#!/usr/bin/env bash
# Self-test of the simulated lab (fake STM32_Programmer_CLI + fake hub_cli.py).
# Builds a throw-away lab dir with symlinks to the fakes, runs the main
# scenarios and checks output lines, exit codes, state.json and calls.log.
# Usage: bash tests/lab/selftest.sh        (prints "N passed, M failed")
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB=$(mktemp -d "${TMPDIR:-/tmp}/stm-lab-selftest.XXXXXX")
trap 'rm -rf "$LAB"' EXIT
ln -s "$HERE/STM32_Programmer_CLI" "$LAB/STM32_Programmer_CLI"
ln -s "$HERE/hub_cli.py" "$LAB/hub_cli.py"
PROG="$LAB/STM32_Programmer_CLI"
HUB="$LAB/hub_cli.py"
OUT="$LAB/out.txt"
ERR="$LAB/err.txt"
RC=0
PASS=0
FAIL=0

DFU_SN=207036B25853
DFU2_SN=316D386B3436
SWD_SN=066CFF383333554157243011

# ---------------------------------------------------------------- helpers

check() {   # check "description" command...
    local what=$1
    shift
    if "$@"; then
        PASS=$((PASS + 1))
    else
        FAIL=$((FAIL + 1))
        echo "FAIL: $what"
        echo "----- stdout:"; cat -A "$OUT" 2>/dev/null | head -60
        echo "----- stderr:"; head -20 "$ERR" 2>/dev/null
        echo "-----"
    fi
}

prog() { "$PROG" "$@" >"$OUT" 2>"$ERR"; RC=$?; }
hub() { "$HUB" "$@" >"$OUT" 2>"$ERR"; RC=$?; }
rc_is() { [ "$RC" -eq "$1" ]; }
line() { grep -Fxq -- "$1" "$OUT"; }          # exact whole line, trailing spaces included
no_line() { ! grep -Fxq -- "$1" "$OUT"; }
has() { grep -Fq -- "$1" "$OUT"; }
hasnt() { ! grep -Fq -- "$1" "$OUT"; }
out_is() { [ "$(cat "$OUT")" = "$1" ]; }
err_has() { grep -Fq -- "$1" "$ERR"; }
# line A comes before line B in the output
before() {
    local a b
    a=$(grep -Fxn -- "$1" "$OUT" | head -1 | cut -d: -f1)
    b=$(grep -Fxn -- "$2" "$OUT" | head -1 | cut -d: -f1)
    [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]
}

# state QUERY: evaluate a Python expression with `s` = state.json, `b` = boards by serial
state() {
    python3 - "$LAB/state.json" "$1" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
b = {x["serial"]: x for x in s.get("boards", [])}
print(eval(sys.argv[2]))
EOF
}
state_is() { [ "$(state "$1")" = "$2" ]; }

# set_state 'python statements editing s' : edit state.json in place
set_state() {
    python3 - "$LAB/state.json" "$1" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
b = {x["serial"]: x for x in s.get("boards", [])}
exec(sys.argv[2])
json.dump(s, open(sys.argv[1], "w"), indent=2)
EOF
}

fresh_state() {   # fresh_state [version] [ansi]
    cat >"$LAB/state.json" <<EOF
{
  "version": "${1:-2.20.0}",
  "ansi": ${2:-false},
  "crlf": false,
  "flash_seconds": 0.1,
  "list_seconds": 0.0,
  "hub": {"power": "0xFFFF", "boot": "0x0000", "nrst": "0x0000", "mode": "normal"},
  "boards": [
    {"serial": "$DFU_SN", "interface": "USB", "hub_port": "USB3", "firmware": null},
    {"serial": "$DFU2_SN", "interface": "USB", "hub_port": "USB4", "firmware": null},
    {"serial": "$SWD_SN", "interface": "SWD", "board": "NUCLEO-G0B1RE", "hub_port": "USB1",
     "firmware": null}
  ]
}
EOF
    rm -f "$LAB/calls.log"
}

head -c 5000 /dev/urandom >"$LAB/app.bin"
printf ':020000040800F2\n:10000000000102030405060708090A0B0C0D0E0F78\n:00000001FF\n' >"$LAB/app.hex"
BIN_SHA=$(sha256sum "$LAB/app.bin" | cut -d' ' -f1)
HEX_SHA=$(sha256sum "$LAB/app.hex" | cut -d' ' -f1)

# ---------------------------------------------------------------- --version

fresh_state 2.20.0 true
prog --version
check "--version exit 0" rc_is 0
# Byte-exact copy of version_linux_piped_ansi_v2.20.0.stdout.bin.txt
RULE="      -------------------------------------------------------------------"
TITLE="                        STM32CubeProgrammer v2.20.0                  "
printf '\033[36m\033[01m%s\n\033[39;49m\033[0m\033[36m\033[01m%s\n\033[39;49m\033[0m\033[36m\033[01m%s\n\n\033[39;49m\033[0m\033[39;49mSTM32CubeProgrammer version: 2.20.0 \n\n\033[39;49m\033[0m' \
    "$RULE" "$TITLE" "$RULE" >"$LAB/expected.txt"
check "--version with ansi is byte-identical to the v2.20.0 capture" cmp -s "$OUT" "$LAB/expected.txt"
SAMPLE="$HERE/../../../shared/stm32cli/version_linux_piped_ansi_v2.20.0.stdout.bin.txt"
if [ -f "$SAMPLE" ]; then
    check "--version matches shared/ sample file" cmp -s "$OUT" "$SAMPLE"
fi
set_state 's["ansi"] = False'
prog -version
check "-version plain" line "STM32CubeProgrammer version: 2.20.0 "
check "-version banner title" line "$TITLE"
check "plain output has no escape codes" bash -c "! grep -q $'\033' '$OUT'"

# ---------------------------------------------------------------- -l

fresh_state 2.20.0
prog -l
check "-l exit 0" rc_is 0
check "-l DFU header" line "=====  DFU Interface   ====="
check "-l DFU count" line "Total number of available STM32 device in DFU mode: 2"
check "-l USB1" line "  Device Index           : USB1"
check "-l USB2" line "  Device Index           : USB2"
check "-l DFU serial" line "  Serial number          : $DFU_SN"
check "-l DFU serial order" before "  Serial number          : $DFU_SN" "  Serial number          : $DFU2_SN"
check "-l product id" line "  Product ID             : STM32  BOOTLOADER"
check "-l J-Link 2.19+" line "No J-Link/flasher probe detected."
check "-l STLink header" line "===== STLink Interface ====="
check "-l probe list" line "-------- Connected ST-LINK Probes List --------"
check "-l probe 0" line "ST-Link Probe 0 :"
check "-l probe SN" line "   ST-LINK SN  : $SWD_SN"
check "-l probe AP" line "   Access Port Number  : 0"
check "-l probe board" line "   Board Name  : NUCLEO-G0B1RE"
check "-l closing dashes" line "-----------------------------------------------"
check "-l UART" line "Total number of serial ports available: 0"
check "-l section order" before "=====  DFU Interface   =====" "===== J-Link Interface ====="
check "-l section order 2" before "===== J-Link Interface =====" "===== STLink Interface ====="
check "-l section order 3" before "===== STLink Interface =====" "=====  UART Interface  ====="

prog -L USB
check "-l usb only DFU" bash -c "grep -q 'DFU Interface' '$OUT' && ! grep -q 'STLink' '$OUT'"
prog --list st-link
check "-l st-link only STLink" bash -c "grep -q 'STLink Interface' '$OUT' && ! grep -q 'DFU' '$OUT'"

set_state 's["boards"] = []; s["version"] = "2.17.0"'
prog -l
check "2.17 no DFU" line "No STM32 device in DFU mode connected"
check "2.17 J-Link error" line "Error: No J-link probe detected."
check "2.17 no ST-Link has Error:" line "Error: No ST-Link detected!"
set_state 's["version"] = "2.19.0"'
prog -l
check "2.19 no ST-Link without Error:" line "No ST-Link detected!"
set_state 's["version"] = "2.6.0"'
prog -l
check "2.6 has no J-Link section" hasnt "J-Link"

fresh_state 2.6.0
prog -l
check "2.6 probe has no Board Name" hasnt "Board Name"

# ---------------------------------------------------------------- DFU flashing

fresh_state 2.20.0
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 -v -s
check "DFU flash exit 0" rc_is 0
check "DFU SN line" line "SN          : $DFU_SN"
check "DFU Revision ID trailing spaces" line "Revision ID : --  "
check "DFU file line" line "  File          : app.bin"
check "DFU size in KB" line "  Size          : 4.88 KB "
check "DFU address" line "  Address       : 0x08000000 "
check "2.18+ ordering" before "Opening and parsing file: app.bin" "Memory Programming ..."
check "DFU bar" line "[==================================================] 100% "
check "DFU download complete" line "File download complete"
check "DFU verified" line "Download verified successfully "
check "DFU start" line "Start operation achieved successfully"
check "DFU start address" line "  Address:      : 0x8000000"
check "DFU start has no SWD line" hasnt "Application is running"
check "DFU firmware recorded" state_is "b['$DFU_SN']['firmware']" "$BIN_SHA"
check "other board untouched" state_is "b['$DFU2_SN']['firmware']" "None"

fresh_state 2.17.0
prog -c port=USB1 SN=$DFU2_SN --download "$LAB/app.hex" --verify
check "2.17 DFU hex exit 0" rc_is 0
check "2.17 ordering" before "Memory Programming ..." "Opening and parsing file: app.hex"
check "hex size from records" line "  Size          : 16 Bytes"
check "2.17 erasing sector line" line "erasing sector 0000 @: 0x08000000 done"
check "hex firmware recorded" state_is "b['$DFU2_SN']['firmware']" "$HEX_SHA"

fresh_state 2.22.0
prog -c port=usb1 -w "$LAB/app.hex" -v
check "2.22 NVM size" line "NVM size  : 1 MBytes (default)"
check "2.22 Device ID" line "Device ID   : 0x413"
check "2.22 Verifying..." line "Verifying..."
check "no sn: first DFU board" state_is "b['$DFU_SN']['firmware']" "$HEX_SHA"

fresh_state 2.20.0
prog -c port=usb1 sn=DEADBEEF0000 -w "$LAB/app.bin" 0x08000000
check "DFU not found exit 1" rc_is 1
check "DFU not found error" line "Error: Target device not found"
check "DFU not found 2nd line" line "Establishing connection with the device failed"

prog -c port=usb1 sn=$DFU_SN -w "$LAB/nope.bin" 0x08000000
check "missing file exit 1" rc_is 1
check "missing file error" line "Error: File does not exist: $LAB/nope.bin"
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin"
check "bin without address exit 1" rc_is 1
check "bin without address error" line "Error: Missing address for .bin file"
prog -c port=usb1 sn=$DFU_SN --frobnicate
check "unknown option exit 1" rc_is 1
check "unknown option Error:" has "Error: Unknown option --frobnicate"

# ---------------------------------------------------------------- failures

fresh_state 2.20.0
set_state 'b["'$DFU_SN'"]["fail"] = "verify"'
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 -v
check "verify fail exit 1" rc_is 1
check "verify mismatch line" line "Error: Data mismatch found at address 0x08000000 (byte = 0x00 instead of 0x49)"
check "verify fail line" line "Error: Download verification failed"
check "verify fail: no firmware" state_is "b['$DFU_SN']['firmware']" "None"

set_state 'b["'$DFU_SN'"]["fail"] = "write"'
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000
check "write fail exit 1" rc_is 1
check "write fail segment" line "Error: failed to download Segment[0]"
check "write fail file" line "Error: failed to download the File"
check "write fail: no complete" no_line "File download complete"

set_state 'b["'$DFU_SN'"]["fail"] = "start"'
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 -s
check "start fail exit 1" rc_is 1
check "start fail line" line "Error: Start operation failed at partition 0x01"

# ---------------------------------------------------------------- SWD

fresh_state 2.20.0
prog -c port=SWD sn=$SWD_SN mode=UR freq=4000 -w "$LAB/app.bin" 0x08000000 -v -s
check "SWD flash exit 0" rc_is 0
check "SWD SN" line "ST-LINK SN  : $SWD_SN"
check "SWD board" line "Board       : NUCLEO-G0B1RE"
check "SWD connect mode" line "Connect mode: Under Reset"
check "SWD reset mode" line "Reset mode  : Hardware reset"
check "SWD running" line "Application is running, Please Hold on..."
check "SWD start ok" line "Start operation achieved successfully"
check "SWD no DFU erase line" hasnt "erasing sector"
check "SWD firmware" state_is "b['$SWD_SN']['firmware']" "$BIN_SHA"

prog -c "port=swd SN=${SWD_SN,,} reset=HWrst" -hardRst
check "SWD one-argv connect, lower-case SN" rc_is 0
check "SWD connect mode Normal" line "Connect mode: Normal"
check "hardRst" line "Hard reset is performed"
check "hardRst counted" state_is "b['$SWD_SN'].get('hard_resets')" "1"
prog -c port=SWD sn=$SWD_SN -rst
check "rst lines" bash -c "grep -Fxq 'MCU Reset' '$OUT' && grep -Fxq 'Software reset is performed' '$OUT'"
check "rst blank, MCU Reset, blank, result" bash -c "tail -4 '$OUT' | tr '\n' '|' | grep -Fxq '|MCU Reset||Software reset is performed|'"
check "rst counted" state_is "b['$SWD_SN'].get('resets')" "1"
check "rst leaves the firmware" state_is "b['$SWD_SN']['firmware']" "$BIN_SHA"

# -e: the 2.15 capture's lines; the firmware is gone, a mode_ur wedge with it
set_state 'b["'$SWD_SN'"]["wedged"] = "mode_ur"'
prog -c port=SWD sn=$SWD_SN mode=UR -e all
check "erase exit 0" rc_is 0
check "erase lines" bash -c "tail -5 '$OUT' | tr '\n' '|' | grep -Fxq '||Mass erase ...||Mass erase successfully achieved|'"
check "erase clears the firmware" state_is "b['$SWD_SN']['firmware']" "None"
check "erase clears a mode_ur wedge" state_is "b['$SWD_SN']['wedged']" "False"
check "erase counted" state_is "b['$SWD_SN'].get('erases')" "1"
set_state 'b["'$SWD_SN'"]["fail"] = "erase"; b["'$SWD_SN'"]["firmware"] = "keep"'
prog -c port=SWD sn=$SWD_SN -e all
check "erase fail exit 1" rc_is 1
check "erase fail lines" bash -c "tail -2 '$OUT' | tr '\n' '|' | grep -Fxq 'Error: Mass erase operation failed.|Please verify flash protection|'"
check "erase fail keeps the firmware" state_is "b['$SWD_SN']['firmware']" "keep"
check "erase fail not counted" state_is "b['$SWD_SN'].get('erases')" "1"
set_state 'b["'$SWD_SN'"]["fail"] = None'

prog -c port=SWD sn=000000000000000000000000 -w "$LAB/app.bin" 0x08000000
check "SWD no probe exit 1" rc_is 1
check "SWD no probe" line "Error: No debug probe detected."

"$HUB" power_off 0x0001 >/dev/null
prog -c port=SWD sn=$SWD_SN
check "SWD unpowered exit 1" rc_is 1
check "SWD unpowered voltage" line "Voltage     : 0.00V"
check "SWD notarget" line "Error: No STM32 target found! If your product embeds Debug Authentication, please perform a discovery using Debug Authentication"
prog -l
check "unpowered SWD probe still listed" line "   ST-LINK SN  : $SWD_SN"
"$HUB" power_on 0x0001 >/dev/null

set_state 'b["'$SWD_SN'"]["fail"] = "connect_retry_ok"'
prog -c port=SWD sn=$SWD_SN -w "$LAB/app.bin" 0x08000000 -v
check "retry ok exit 0" rc_is 0
check "retry prints non-final Error" line "Error: No STM32 target found!"
check "retry notice" line "2nd connect tentative with a lower frequency (8MHz)"
check "retry freq" line "SWD freq    : 8000 KHz"
check "retry verified" line "Download verified successfully "

fresh_state 2.20.0
set_state 'b["'$SWD_SN'"]["wedged"] = "mode_ur"'
prog -c port=SWD sn=$SWD_SN
check "mode_ur wedge: normal connect fails" rc_is 1
prog -c port=SWD sn=$SWD_SN mode=UR -w "$LAB/app.bin" 0x08000000
check "mode_ur wedge: UR connect flashes" rc_is 0
check "mode_ur wedge cleared by flashing" state_is "b['$SWD_SN']['wedged']" "False"

# ---------------------------------------------------------------- ANSI / CRLF / stderr

fresh_state 2.20.0 true
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000
check "ansi ordinary line prefix" grep -Fq $'\033[39;49m\033[0m\033[39;49mFile download complete' "$OUT"
prog -c port=usb1 sn=NOPE
check "ansi error line is red" grep -Fq $'\033[31mError: Target device not found' "$OUT"
set_state 's["ansi"] = False; s["crlf"] = True; s["stderr_noise"] = True'
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000
check "crlf exit 0" rc_is 0
check "crlf line endings" grep -q $'^File download complete\r$' "$OUT"
check "crlf: no bare LF" bash -c "[ \$(grep -c \$'\r\$' '$OUT') -eq \$(wc -l <'$OUT') ]"
check "stderr libcrypto noise" err_has "libcrypto.so.1.1: no version information available"

# ---------------------------------------------------------------- hub
# The fake behaves like the real hub_cli.py: Python-list replies, exit 0 on a
# refusal, an invented ['OK'] when the hub is silent, tracebacks with exit 1.

fresh_state 2.20.0
set_state 's["hub"]["write_pause"] = 0; s["hub"]["silent_seconds"] = 0.2'
hub get_power_state
check "get_power_state" out_is "['+POWERSTATE: 0xFFFF', 'OK']"
check "get_power_state exit 0" rc_is 0
hub power_off 0x0004
check "power_off output" out_is "['OK']"
check "power_off state" state_is "s['hub']['power']" "0xFFFB"
prog -l usb
check "unpowered DFU board hidden" hasnt "$DFU_SN"
check "other DFU board now USB1" line "  Device Index           : USB1"
prog -c port=usb1 sn=$DFU_SN
check "unpowered DFU board: connect fails" rc_is 1
hub power_on 0X4
check "power_on upper-case 0X" out_is "['OK']"
check "power_on state" state_is "s['hub']['power']" "0xFFFF"
hub power_on 4
check "power_on bare hex digits (int(x, 16))" out_is "['OK']"
hub boot_on 0x000c
check "boot_on state" state_is "s['hub']['boot']" "0x000C"
hub get_boot_state
check "get_boot_state" out_is "['+BOOTSTATE: 0x000C', 'OK']"
hub nrst_on 0x0004
hub get_nrst_state
check "get_nrst_state" out_is "['+NRSTSTATE: 0x0004', 'OK']"
prog -l usb
check "board held in reset is hidden" hasnt "$DFU_SN"
hub nrst_off 0x0004
check "nrst_off state" state_is "s['hub']['nrst']" "0x0000"
hub set_boot_state 0x0001
check "set_boot_state replaces" state_is "s['hub']['boot']" "0x0001"
hub boot_off 0x0001
hub stlink_mux 3
check "stlink_mux output" out_is "['OK']"
hub get_stlink_mux
check "get_stlink_mux" out_is "['+STLINKMUX: 3', 'OK']"
hub stlink_mux 17
check "stlink_mux 17: traceback exit 1" rc_is 1
check "stlink_mux 17: range error" err_has "ValueError: STLINK MUX port must be between 1 and 16"
hub power_on zz
check "bad mask: traceback exit 1" rc_is 1
check "bad mask: ValueError" err_has "ValueError: invalid literal for int() with base 16: 'zz'"
check "bad mask: traceback header" err_has "Traceback (most recent call last):"
hub power_on
check "missing mask exit 1" rc_is 1
check "missing mask IndexError" err_has "IndexError: list index out of range"
hub explode 0x0001
check "unknown command exit 0" rc_is 0
check "unknown command text" out_is "Unknown command: explode"
hub
check "no command: usage exit 1" rc_is 1
check "no command: usage on stdout" out_is "Usage: hub_cli.py <command> [args]"
hub power_off 0x10000
check "mask beyond 16 bits refused, exit 0" out_is "['ERROR']"
check "refused: exit 0" rc_is 0
set_state 's["hub"]["ports"] = 4'
hub power_off 0x0010
check "4-port hub refuses USB5" out_is "['ERROR']"
check "4-port hub: no change" state_is "s['hub']['power']" "0xFFFF"
hub get_power_state
check "4-port hub reads 4 ports" out_is "['+POWERSTATE: 0x000F', 'OK']"
set_state 's["hub"]["ports"] = 16; s["hub"]["refuse"] = ["nrst_on"]'
hub nrst_on 0x0004
check "refuse list: nrst_on refused" out_is "['ERROR']"
check "refuse list: no change" state_is "s['hub']['nrst']" "0x0000"
hub nrst_off 0x0004
check "refuse list: others accepted" out_is "['OK']"
set_state 's["hub"]["refuse"] = []; s["hub"]["mode"] = "refuses"; s["hub"]["error_text"] = "ERROR: busy"'
hub power_off 0x0001
check "refuses: ERROR text, exit 0" out_is "['ERROR: busy']"
check "refuses: rc 0" rc_is 0
check "refuses: no change" state_is "s['hub']['power']" "0xFFFF"
set_state 's["hub"]["mode"] = "silent"'
hub power_off 0x0001
check "silent hub: the script invents OK" out_is "['OK']"
check "silent hub: exit 0" rc_is 0
check "silent hub: nothing switched" state_is "s['hub']['power']" "0xFFFF"
hub get_power_state
check "silent hub: a query reads only OK" out_is "['OK']"
set_state 's["hub"]["mode"] = "mute"'
hub power_off 0x0001
check "mute hub: OK" out_is "['OK']"
check "mute hub: switched all the same" state_is "s['hub']['power']" "0xFFFE"
hub get_power_state
check "mute hub: query unanswered" out_is "['OK']"
set_state 's["hub"]["mode"] = "stuck"'
hub power_off 0x0002
check "stuck relay: OK" out_is "['OK']"
check "stuck relay: nothing switched" state_is "s['hub']['power']" "0xFFFE"
set_state 's["hub"]["mode"] = "port_missing"'
hub get_power_state
check "port missing: exit 1" rc_is 1
check "port missing: SerialException" err_has "serial.serialutil.SerialException: [Errno 2] could not open port /dev/serial0: [Errno 2] No such file or directory: '/dev/serial0'"
hub nonsense
check "port missing: opened before the command is looked at" rc_is 1
set_state 's["hub"]["mode"] = "port_denied"'
hub get_power_state
check "port denied: Errno 13" err_has "[Errno 13] Permission denied: '/dev/serial0'"
set_state 's["hub"]["mode"] = "no_pyserial"'
hub
check "no pyserial: traceback before the usage" err_has "ModuleNotFoundError: No module named 'serial'"
check "no pyserial: exit 1" rc_is 1
set_state 's["hub"]["mode"] = "normal"; s["hub"]["reply_style"] = "equals"'
hub get_power_state
check "reply_style equals" out_is "['POWERSTATE=0xFFFE', 'OK']"
set_state 's["hub"]["reply_style"] = "decimal"'
hub get_power_state
check "reply_style decimal" out_is "['+POWERSTATE: 65534', 'OK']"
set_state 's["hub"]["reply_style"] = "plus"; s["hub"]["write_pause"] = 0.5'
"$HUB" power_on 0x0001 >/dev/null &
H1=$!
sleep 0.2
hub power_on 0x0002
wait $H1
check "two scripts on the UART at once are counted" state_is "s['hub']['collisions']" "1"

# ---------------------------------------------------------------- ST-LINK mux
# Boards behind the hub's ST-LINK multiplexer share one probe serial; the probe reaches
# the board on the hub's current channel.
MUX_SN=066DFF485457725187092834
fresh_state 2.20.0
set_state 's["hub"]["write_pause"] = 0; s["boards"] += [
    {"serial": "'$MUX_SN'", "interface": "SWD", "board": "NUCLEO-L4", "mux": 1, "firmware": None},
    {"serial": "'$MUX_SN'", "interface": "SWD", "board": "NUCLEO-L4", "mux": 2, "firmware": None}]'
prog -l st-link
check "mux probe listed once" [ "$(grep -c "ST-LINK SN  : $MUX_SN" "$OUT")" = 1 ]
hub stlink_mux 2
prog -c port=SWD sn=$MUX_SN -w "$LAB/app.hex" -v
check "mux: flash on channel 2 exit 0" rc_is 0
check "mux: channel 2 written" state_is "[x.get('firmware') for x in s['boards'] if x.get('mux')]" "[None, '$HEX_SHA']"
hub stlink_mux 5
prog -c port=SWD sn=$MUX_SN
check "mux: empty channel, no target" rc_is 1
check "mux: empty channel says no target" has "Error: No STM32 target found!"
hub stlink_mux 1
set_state 's["flash_seconds"] = 1.0'
"$PROG" -c port=SWD sn=$MUX_SN -w "$LAB/app.bin" 0x08000000 >"$LAB/m1.out" 2>&1 &
P1=$!
for _ in $(seq 50); do grep -q "Download in Progress:" "$LAB/m1.out" && break; sleep 0.1; done
hub stlink_mux 2
wait $P1; R1=$?
check "mux switched mid-write: the write fails" [ "$R1" = 1 ]
check "mux switched mid-write: counted" state_is "[x.get('mux_cut_flashes') for x in s['boards'] if x.get('mux')]" "[1, None]"

set_state 'del s["hub"]'
prog -l usb
check "no hub object: ports powered by default" line "  Serial number          : $DFU_SN"

# ---------------------------------------------------------------- uhubctl
ln -s "$HERE/uhubctl" "$LAB/uhubctl" 2>/dev/null
UHUB="$LAB/uhubctl"
uhub() { "$UHUB" "$@" >"$OUT" 2>"$ERR"; RC=$?; }
fresh_state 2.20.0
set_state 's["usb_hubs"] = [
  {"location": "1-1.4", "usb": "2.10", "ports": 4, "switching": "ppps", "dual": "2-1.4", "power": "0x000F"},
  {"location": "2-1.4", "usb": "3.00", "product": "USB3.0 Hub", "ports": 4, "switching": "ppps", "dual": "1-1.4", "power": "0x000F"},
  {"location": "1-1.3", "ports": 4, "switching": "ganged", "power": "0x000F"}]
s["usb_devices"] = [{"usb": "1-1.4:1", "desc": "0bda:8153 Realtek USB 10/100/1000 LAN"}]
b["'$DFU_SN'"]["usb"] = "1-1.4:3"; b["'$SWD_SN'"]["usb"] = "1-1.4:2"'
uhub
check "uhubctl: listing exit 0" rc_is 0
check "uhubctl: header" line "Current status for hub 1-1.4 [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ppps]"
check "uhubctl: DFU board on its port" line "  Port 3: 0103 power enable connect [0483:df11 STMicroelectronics STM32  BOOTLOADER $DFU_SN]"
check "uhubctl: ST-LINK on its port" line "  Port 2: 0103 power enable connect [0483:3748 STMicroelectronics STM32 STLink $SWD_SN]"
check "uhubctl: device without serial" line "  Port 1: 0103 power enable connect [0bda:8153 Realtek USB 10/100/1000 LAN]"
check "uhubctl: USB3 half" line "  Port 4: 02a0 power 5gbps Rx.Detect"
check "uhubctl: ganged hub left out" hasnt "1-1.3"
uhub -f -l 1-1.3
check "uhubctl: -f shows the ganged hub" line "Current status for hub 1-1.3 [2109:2817 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ganged]"
uhub -a off
check "uhubctl: an action needs one hub (-l) only when several" rc_is 0
uhub -l 1-1.4 -a on
uhub -l 1-1.4 -p 3 -a off
check "uhubctl: off exit 0" rc_is 0
check "uhubctl: new status off" line "  Port 3: 0000 off"
check "uhubctl: the USB3 half switched too" line "  Port 3: 00a0 off"
check "uhubctl: power cut counted" state_is "b['$DFU_SN'].get('power_cuts')" "2"
prog -l usb
check "uhubctl: unpowered DFU board hidden" hasnt "$DFU_SN"
uhub -l 1-1.4 -p 3 -e -a on
check "uhubctl: -e switches one half only" state_is "[h['power'] for h in s['usb_hubs'][:2]]" "['0x000F', '0x000B']"
uhub -l 9-9 -p 1 -a off
check "uhubctl: unknown location exit 1" rc_is 1
check "uhubctl: unknown location message" err_has "No compatible devices detected at location 9-9!"
set_state 's["usb_hubs"][0]["physically_ganged"] = True'
uhub -l 1-1.4 -p 3 -a off
check "uhubctl: a physically ganged hub cuts every port" state_is "s['usb_hubs'][0]['power']" "0x0000"
set_state 's["uhubctl"] = {"permission": False}'
uhub
check "uhubctl: no permission exit 1" rc_is 1
check "uhubctl: no permission message" err_has "There were permission problems while accessing USB."

# ---------------------------------------------------------------- wedged boards

fresh_state 2.20.0
set_state 'b["'$DFU_SN'"]["wedged"] = "boot_nrst"; b["'$DFU2_SN'"]["wedged"] = "nrst"'
prog -l usb
check "wedged boards hidden" line "No STM32 device in DFU mode connected"
"$HUB" nrst_on 0x000C >/dev/null
"$HUB" nrst_off 0x000C >/dev/null
check "nrst wedge cleared by reset pulse" state_is "b['$DFU2_SN']['wedged']" "False"
check "boot_nrst wedge needs BOOT0" state_is "b['$DFU_SN']['wedged']" "boot_nrst"
"$HUB" boot_on 0x0004 >/dev/null
"$HUB" nrst_off 0x0004 >/dev/null
check "release without assert is no pulse" state_is "b['$DFU_SN']['wedged']" "boot_nrst"
"$HUB" nrst_on 0x0004 >/dev/null
"$HUB" nrst_off 0x0004 >/dev/null
check "boot_nrst wedge cleared" state_is "b['$DFU_SN']['wedged']" "False"
prog -l usb
check "recovered board listed" line "  Serial number          : $DFU_SN"

fresh_state 2.20.0
set_state 'b["'$DFU_SN'"]["wedged"] = "power"; b["'$DFU2_SN'"]["wedged"] = "forever"'
"$HUB" power_on 0x000C >/dev/null
check "power wedge: on while on does nothing" state_is "b['$DFU_SN']['wedged']" "power"
"$HUB" power_off 0x000C >/dev/null
"$HUB" power_on 0x000C >/dev/null
check "power wedge cleared by power cycle" state_is "b['$DFU_SN']['wedged']" "False"
"$HUB" boot_on 0x000C >/dev/null
"$HUB" nrst_on 0x000C >/dev/null
"$HUB" nrst_off 0x000C >/dev/null
check "forever wedge stays" state_is "b['$DFU2_SN']['wedged']" "forever"

fresh_state 2.20.0
set_state 's["dfu_start_leaves_dfu"] = True'
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 -s
check "start leaves DFU" state_is "b['$DFU_SN']['wedged']" "boot_nrst"
check "start counted" state_is "b['$DFU_SN'].get('starts')" "1"
# a DFU board's restart without a write: `-s 0x08000000` alone
prog -c port=usb sn=$DFU2_SN -s 0x08000000
check "go alone exit 0" rc_is 0
check "go alone started" line "Start operation achieved successfully"
check "go alone counted" state_is "b['$DFU2_SN'].get('starts')" "1"
check "go alone leaves DFU" state_is "b['$DFU2_SN']['wedged']" "boot_nrst"
# erase over DFU
set_state 'b["'$DFU_SN'"]["wedged"] = False; b["'$DFU_SN'"]["firmware"] = "old"'
prog -c port=usb sn=$DFU_SN -e all
check "DFU erase exit 0" rc_is 0
check "DFU erase clears the firmware" state_is "b['$DFU_SN']['firmware']" "None"

# ---------------------------------------------------------------- concurrency, calls.log, signals

fresh_state 2.20.0
set_state 's["flash_seconds"] = 1.0'
"$PROG" -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 >"$LAB/p1.out" 2>&1 &
P1=$!
"$PROG" -c port=SWD sn=$SWD_SN -w "$LAB/app.hex" >"$LAB/p2.out" 2>&1 &
P2=$!
sleep 0.3
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000
check "same board busy: second connect fails" rc_is 1
"$HUB" power_off 0x0002 >/dev/null
wait $P1; R1=$?
wait $P2; R2=$?
check "parallel runs exit 0" [ "$R1$R2" = "00" ]
check "parallel: both firmware recorded" state_is "(b['$DFU_SN']['firmware'], b['$SWD_SN']['firmware'])" "('$BIN_SHA', '$HEX_SHA')"
check "parallel: hub change during flash kept" state_is "s['hub']['power']" "0xFFFD"
python3 - "$LAB/calls.log" >"$LAB/sweep.txt" <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
cur = peak = 0
open_ = {}
for r in recs:
    if r["tool"] != "programmer":
        continue
    if r["event"] == "start":
        cur += 1; open_[r["pid"]] = r
    else:
        cur -= 1; open_.pop(r["pid"])
    peak = max(peak, cur)
ts = [r["t"] for r in recs]
print(peak, len(open_), ts == sorted(ts))
EOF
# two flashes plus the refused same-board attempt were running at once
check "calls.log: peak overlap 3, all ended, time-ordered" [ "$(cat "$LAB/sweep.txt")" = "3 0 True" ]
check "calls.log: write run has serial and sha" grep -q "\"serial\": \"$DFU_SN\", \"file_sha256\": \"$BIN_SHA\"" "$LAB/calls.log"
check "calls.log: hub records" grep -q '"tool": "hub", "event": "end", "argv": \["power_off", "0x0002"\], "exit": 0' "$LAB/calls.log"

fresh_state 2.20.0
set_state 's["flash_seconds"] = 1.0; s["flash_seconds_from_exec"] = True'
# The process spends 0.5 s before it execs the fake: that is part of its 1 s run time.
T0=$(date +%s%N)
sh -c 'sleep 0.5; exec "$0" "$@"' "$PROG" -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 -v >"$OUT" 2>"$ERR"
RC=$?
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
within() { [ "$1" -ge "$2" ] && [ "$1" -lt "$3" ]; }
check "flash_seconds_from_exec: run ok" rc_is 0
check "flash_seconds_from_exec: exec to exit is flash_seconds, start-up included ($MS ms)" within "$MS" 950 1350

fresh_state 2.20.0
set_state 's["flash_seconds"] = 5'
"$PROG" -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 >"$OUT" 2>&1 &
P1=$!
for _ in $(seq 50); do grep -q "Download in Progress:" "$OUT" && break; sleep 0.1; done
check "progress visible before the write finishes" line "Download in Progress:"
kill -TERM $P1
wait $P1; R1=$?
check "SIGTERM exit 143" [ "$R1" = 143 ]
check "SIGTERM end record" grep -q '"event": "end".*"exit": 143' "$LAB/calls.log"
check "SIGTERM: no firmware" state_is "b['$DFU_SN']['firmware']" "None"
"$PROG" -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 >"$OUT" 2>&1 &
P1=$!
for _ in $(seq 50); do grep -q "Download in Progress:" "$OUT" && break; sleep 0.1; done
kill -HUP $P1
wait $P1; R1=$?
check "SIGHUP exit 129" [ "$R1" = 129 ]
check "SIGHUP end record" grep -q '"event": "end".*"exit": 129' "$LAB/calls.log"
prog -c port=usb1 sn=$DFU_SN
check "killed run releases the board" rc_is 0

# fail: "crash": death by a signal in the middle of the download, with its end record.
fresh_state 2.20.0
set_state 'b["'$DFU_SN'"]["fail"] = "crash"'
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000
check "crash: SIGSEGV exit 139" rc_is 139
check "crash: download started" line "Download in Progress:"
check "crash: no complete" no_line "File download complete"
check "crash: end record names the signal" grep -q '"event": "end".*"exit": 139, "signal": "SIGSEGV"' "$LAB/calls.log"
check "crash: no firmware" state_is "b['$DFU_SN']['firmware']" "None"
set_state 'b["'$DFU_SN'"]["crash_signal"] = "SIGABRT"'
prog -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000
check "crash: crash_signal SIGABRT exit 134" rc_is 134
check "crash: no core file left" [ ! -e core ]

# fail: "ignore_term": TERM is logged and ignored, only KILL ends it (no end record).
fresh_state 2.20.0
set_state 's["flash_seconds"] = 30; b["'$DFU_SN'"]["fail"] = "ignore_term"'
"$PROG" -c port=usb1 sn=$DFU_SN -w "$LAB/app.bin" 0x08000000 >"$OUT" 2>&1 &
P1=$!
for _ in $(seq 50); do grep -q "Download in Progress:" "$OUT" && break; sleep 0.1; done
kill -TERM $P1
for _ in $(seq 50); do grep -q '"event": "signal"' "$LAB/calls.log" && break; sleep 0.1; done
check "ignore_term: TERM logged as ignored" grep -q '"event": "signal".*"signal": "SIGTERM", "ignored": true' "$LAB/calls.log"
check "ignore_term: still running after TERM" kill -0 $P1
kill -KILL $P1
wait $P1; R1=$?
check "ignore_term: KILL exit 137" [ "$R1" = 137 ]
check "ignore_term: no end record" bash -c "! grep -q '\"event\": \"end\"' '$LAB/calls.log'"

# header_serial: the connect header shows another serial, or none.
fresh_state 2.20.0
set_state 'b["'$DFU_SN'"]["header_serial"] = "0000DEADBEEF"; b["'$SWD_SN'"]["header_serial"] = False'
prog -c port=usb1 sn=$DFU_SN
check "header_serial: other serial shown" line "SN          : 0000DEADBEEF"
prog -c port=SWD sn=$SWD_SN
check "header_serial false: connect ok" rc_is 0
check "header_serial false: no SN line" hasnt "ST-LINK SN"

# A copy (not a symlink) in another dir uses that dir's state.json.
LAB2="$LAB/copy"
mkdir "$LAB2"
cp "$HERE/STM32_Programmer_CLI" "$HERE/hub_cli.py" "$LAB2/"
printf '{"version": "2.18.0", "hub": {"power": "0x0001"}, "boards": []}\n' >"$LAB2/state.json"
check "copied fake uses its own state" bash -c "'$LAB2/STM32_Programmer_CLI' --version | grep -Fxq 'STM32CubeProgrammer version: 2.18.0 '"
check "copied hub uses its own state" bash -c "[ \"\$('$LAB2/hub_cli.py' get_power_state)\" = \"['+POWERSTATE: 0x0001', 'OK']\" ]"
check "copied fakes log in their own dir" [ "$(grep -c '"event": "start"' "$LAB2/calls.log")" = 2 ]

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
