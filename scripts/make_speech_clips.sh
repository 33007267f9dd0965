#!/usr/bin/env bash
# Regenerate the speech clips in archer/data/speech/ for the demo and the emulators.
#
# Needs Debian's espeak-ng and sox (apt-get install espeak-ng sox). The output is committed as
# data, so this runs only when a line changes: espeak-ng's voices differ between versions, and
# nobody should need the tools to run Archer or its tests.
#
# Each clip is 8 kHz mono μ-law WAV, what Twilio carries. Leading and trailing silence is trimmed
# (silence, then the same on the reversed audio) so the demo scripts, not the clips, set pauses.
# Agent lines: en-us female voice; caller lines: en-gb male voice, so the two sides are easy to
# tell apart in a recording. The texts must match _TEXTS in archer/audio/clips.py verbatim
# (tests/audio/test_clips.py checks).
set -euo pipefail

out_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/archer/data/speech"
work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT
mkdir -p "$out_dir"

# clip NAME VOICE WORDS_PER_MINUTE TEXT
clip() {
    local name="$1" voice="$2" speed="$3" text="$4"
    espeak-ng -v "$voice" -s "$speed" -w "$work_dir/$name.wav" "$text"
    # -D: no dither. sox seeds its dither randomly, so with it every run would rewrite every
    # committed clip with fresh noise; without it the same espeak-ng gives the same bytes.
    sox -D "$work_dir/$name.wav" -r 8000 -c 1 -e u-law "$out_dir/$name.wav" \
        silence 1 0.05 1% reverse silence 1 0.05 1% reverse
}

agent() { clip "$1" en-us+f3 165 "$2"; }
caller() { clip "$1" en-gb 160 "$2"; }

agent agent_greeting "Welcome to Archer Bank. How can I help you today?"
agent agent_pin_prompt "Sure. For your security, please enter your PIN on your keypad."
agent agent_balance "Thank you, you're verified. Your checking account ending in four eight two one has a balance of two thousand five hundred and forty three dollars and ten cents. Your savings account ending in seven three one zero holds twelve thousand eight hundred and fifty dollars. And your credit card ending in nine nine zero four has a balance owed of six hundred and forty two dollars and eighteen cents."
agent agent_freeze_confirm "Of course. I'm freezing your card ending in two two zero seven now."
agent agent_frozen "Done. Your card is frozen. Is there anything else I can help you with?"
agent agent_goodbye "Thank you for calling Archer Bank. Goodbye."
agent agent_transfer "I understand. Let me transfer you to a colleague who can help."
agent agent_lost_transfer "I'm sorry, I'm having technical trouble. Let me put you through to a colleague."
agent agent_lost_goodbye "I'm sorry, I'm having technical trouble. Please call us again in a few minutes. Goodbye."
agent agent_fraud_greeting "Hello, this is Archer Bank calling about a recent payment on your card."
agent agent_fraud_pin_prompt "Before I tell you more, please enter your PIN on your keypad, then press hash."
agent agent_fraud_question "Thank you, you're verified. Did you make this payment?"
agent agent_fraud_frozen "Thank you. I have frozen the card and recorded that you did not make this payment. We will send you a new card. Goodbye."
caller caller_balance "Hi, I'd like to check my balance, please."
caller caller_freeze "Sorry to interrupt. I think I lost my card. Can you freeze the one ending in two two zero seven?"
caller caller_thanks "No, that's all. Thank you, bye."
caller caller_human "Actually, I'd like to speak to a person, please."
caller caller_not_me "No, that wasn't me."
