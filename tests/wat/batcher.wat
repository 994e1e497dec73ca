;; Answers each message from the client with its payload behind a prefix and drops it: "b:" when
;; it came in a batch (`fg_on_messages`), "m:" when one by one (`fg_on_message`). Counts every
;; message it sees (metric `seen`). A message starting with "c" closes the connection (4000,
;; "bye"); one starting with "u" goes on unanswered (to the route's sinks); one starting with "k"
;; too, after setting the connection's metadata `kind` to it. In a batch, one starting with "t"
;; traps and one starting with "e" ends the batch early (after its answer). Messages towards
;; the client go on with their `msg.id` and ":" before them.
(module
  (import "framegate" "next" (func $next (param i32) (result i64)))
  (import "framegate" "read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "framegate" "close" (func $close (param i32 i32 i32) (result i32)))
  (import "framegate" "meta_get" (func $meta_get (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "meta_set" (func $meta_set (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "replace" (func $replace (param i32 i32) (result i32)))
  (import "framegate" "metric" (func $metric (param i32 i32 i32 f64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 48) "bye")
  (data (i32.const 64) "msg.id")
  (data (i32.const 80) "seen")
  (data (i32.const 88) "kind")
  (func (export "fg_abi_v1"))

  ;; Replaces the message in hand (towards the client) with its `msg.id`, ":" and itself.
  (func $tag (param $len i32)
    (local $n i32)
    (local.set $n (call $meta_get (i32.const 64) (i32.const 6) (i32.const 300) (i32.const 16)))
    (i32.store8 (i32.add (i32.const 300) (local.get $n)) (i32.const 58)) ;; ':'
    (drop (call $read (i32.const 0) (i32.const 0) (i32.add (i32.const 301) (local.get $n)) (i32.const 64)))
    (drop (call $replace (i32.const 300) (i32.add (i32.add (local.get $n) (i32.const 1)) (local.get $len)))))

  ;; Counts the message in hand from the client and reads it to 102; answers it behind `prefix`
  ;; unless it goes on ("u", "k": 0) or closes ("c": 2, after `close`); 1 otherwise. A "k"
  ;; message sets `kind`.
  (func $handle (param $prefix i32) (param $len i32) (result i32)
    (local $first i32)
    (drop (call $metric (i32.const 80) (i32.const 4) (i32.const 0) (f64.const 1)))
    (i32.store16 (i32.const 100) (local.get $prefix))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 102) (i32.const 64)))
    (local.set $first (i32.load8_u (i32.const 102)))
    (if (i32.eq (local.get $first) (i32.const 117)) (then (return (i32.const 0)))) ;; 'u'
    (if (i32.eq (local.get $first) (i32.const 107)) ;; 'k'
      (then
        (drop (call $meta_set (i32.const 88) (i32.const 4) (i32.const 102) (local.get $len)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $first) (i32.const 99)) ;; 'c'
      (then
        (drop (call $close (i32.const 4000) (i32.const 48) (i32.const 3)))
        (return (i32.const 2))))
    (drop (call $send (i32.const 1) (i32.const 100) (i32.add (local.get $len) (i32.const 2))))
    (i32.const 1))

  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (if (local.get 1)
      (then (call $tag (local.get 3)) (return (i32.const 0))))
    (call $handle (i32.const 0x3a6d) (local.get 3))) ;; "m:"

  (func (export "fg_on_messages") (param i64 i32) (result i32)
    (local $verdict i32) (local $next i64) (local $len i32)
    (loop $each
      (local.set $next (call $next (local.get $verdict)))
      (if (i64.lt_s (local.get $next) (i64.const 0))
        (then (return (i32.const 0))))
      (local.set $len (i32.wrap_i64 (local.get $next)))
      (local.set $verdict (i32.const 0))
      (if (local.get 1)
        (then (call $tag (local.get $len)) (br $each)))
      (local.set $verdict (call $handle (i32.const 0x3a62) (local.get $len))) ;; "b:"
      (if (i32.eq (i32.load8_u (i32.const 102)) (i32.const 116)) ;; 't'
        (then unreachable))
      (if (i32.eq (i32.load8_u (i32.const 102)) (i32.const 101)) ;; 'e'
        (then (return (local.get $verdict))))
      (br $each))
    (i32.const 0)))
