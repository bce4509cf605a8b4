;;; sotto-test.el --- ERT tests of sotto.el against real daemons  -*- lexical-binding: t; -*-

;;; Commentary:

;; Run by daemon/tests/clients/emacs.rs, which starts a relay and real daemons and
;; passes them in SOTTO_TEST_* variables:
;;   emacs --batch -Q -L contrib/emacs -l contrib/emacs/test/sotto-test.el -f ert-run-tests-batch-and-exit

;;; Code:

(require 'ert)
(require 'sotto)

(defun sotto-test--env (name)
  "The test variable NAME, or an error saying how to run the tests."
  (or (getenv name) (error "Missing %s: run through cargo test --workspace emacs_" name)))

(defvar sotto-test--conv (sotto-test--env "SOTTO_TEST_CONV"))
(defvar sotto-test--alice (sotto-test--env "SOTTO_TEST_ALICE_ADDRESS"))

(defun sotto-test--wait (what pred &optional seconds)
  "Waits until PRED holds, at most SECONDS (default 60); fails naming WHAT."
  (let ((deadline (+ (float-time) (or seconds 60))))
    (while (and (not (funcall pred)) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (unless (funcall pred)
      (ert-fail (format "timed out waiting for %s" what)))))

(defun sotto-test--line (socket line)
  "Writes LINE to SOCKET on a connection of its own; returns the first line answered."
  (let* ((out "")
         (proc (make-network-process :name "sotto-test" :family 'local :service socket
                                     :coding 'utf-8 :noquery t
                                     :filter (lambda (_p s) (setq out (concat out s))))))
    (process-send-string proc (concat line "\n"))
    (sotto-test--wait line (lambda () (string-match-p "\n" out)) 120)
    (delete-process proc)
    (substring out 0 (string-match-p "\n" out))))

(defun sotto-test--alice (method params)
  "Calls METHOD with PARAMS on alice's daemon; returns the result."
  (let* ((answer (sotto-test--line
                  (sotto-test--env "SOTTO_TEST_ALICE_SOCKET")
                  (json-serialize `((jsonrpc . "2.0") (id . 1) (method . ,method)
                                    (params . ,params)))))
         (msg (sotto--decode (encode-coding-string answer 'utf-8))))
    (should-not (alist-get 'error msg))
    (alist-get 'result msg)))

(defun sotto-test--alice-send (text)
  "Alice sends TEXT to the test conversation."
  (sotto-test--alice "message.send" `((conversation . ,sotto-test--conv) (text . ,text))))

(defun sotto-test--alice-has (text)
  "Whether alice's history holds TEXT."
  (member text (mapcar (lambda (m) (alist-get 'text m))
                       (sotto-test--alice "message.list"
                                          `((conversation . ,sotto-test--conv) (limit . 1000))))))

(defun sotto-test--control (line)
  "Asks the harness to LINE (e.g. \"restart bob\")."
  (should (equal (sotto-test--line (sotto-test--env "SOTTO_TEST_CONTROL") line) "ok")))

(defun sotto-test--count (buf text)
  "How many times TEXT occurs in BUF."
  (with-current-buffer buf
    (save-excursion
      (goto-char (point-min))
      (let ((n 0))
        (while (search-forward text nil t) (setq n (1+ n)))
        n))))

(defun sotto-test--buffer ()
  "The conversation buffer of the test conversation."
  (gethash sotto-test--conv sotto--views))

(ert-deftest sotto-01-default-socket ()
  (should (equal (sotto-default-socket) (sotto-test--env "SOTTO_TEST_BOB_SOCKET")))
  (let ((process-environment (cons "SOTTO_SOCKET=/x/y.sock" process-environment)))
    (should (equal (sotto-default-socket) "/x/y.sock")))
  (let ((process-environment (append '("SOTTO_SOCKET=rel" "XDG_RUNTIME_DIR=") process-environment)))
    (should (equal (sotto-default-socket) (format "/tmp/sotto-%d/sottod.sock" (user-uid))))))

(ert-deftest sotto-02-customize-group ()
  (let ((members (mapcar #'car (get 'sotto 'custom-group))))
    (should (memq 'sotto-socket members))
    (should (memq 'sotto-notify members))))

(ert-deftest sotto-03-open-shows-history ()
  (sotto-test--alice-send "e1 history")
  (sotto-test--wait "bob to receive e1"
                    (lambda () (sotto-call "message.list" `((conversation . ,sotto-test--conv)))))
  (let ((buf (sotto-open sotto-test--alice)))
    (should (equal (buffer-name buf) (format "*sotto: %s*" sotto-test--alice)))
    (should (eq buf (sotto-test--buffer)))
    (should (= 1 (sotto-test--count buf "e1 history")))
    (should (= 1 (sotto-test--count buf (concat sotto-test--alice ": e1"))))
    (should (equal (sotto-open sotto-test--conv) buf))))

(ert-deftest sotto-04-live-messages-keep-the-readers-place ()
  (let ((buf (sotto-test--buffer)))
    (switch-to-buffer buf)
    (goto-char (point-min))
    (sotto-test--alice-send "e2 live")
    (sotto-test--wait "e2" (lambda () (= 1 (sotto-test--count buf "e2 live"))))
    (should (= (point) (point-min)))
    ;; above the input area
    (should (< (with-current-buffer buf (save-excursion (goto-char (point-min)) (search-forward "e2 live")))
               (with-current-buffer buf (marker-position sotto--input-marker))))))

(ert-deftest sotto-05-input-area-ret-sends ()
  (let ((buf (sotto-test--buffer)))
    (switch-to-buffer buf)
    (goto-char (point-max))
    (insert "typed in emacs")
    (execute-kbd-macro (kbd "RET"))
    (sotto-test--wait "alice to receive it" (lambda () (sotto-test--alice-has "typed in emacs")))
    (sotto-test--wait "the own message shown" (lambda () (= 1 (sotto-test--count buf "typed in emacs"))))
    (should (equal (buffer-substring-no-properties sotto--input-marker (point-max)) ""))
    ;; history is read-only
    (goto-char (point-min))
    (should-error (insert "x") :type 'text-read-only)))

(ert-deftest sotto-06-send-is-asynchronous ()
  (should (null (sotto-send sotto-test--alice "sent with sotto-send")))
  (sotto-test--wait "alice to receive it" (lambda () (sotto-test--alice-has "sent with sotto-send")))
  (sotto-test--wait "shown once" (lambda () (= 1 (sotto-test--count (sotto-test--buffer) "sent with sotto-send")))))

(ert-deftest sotto-07a-state-word ()
  (should (equal (sotto--state-word '((state . "active"))) ""))
  (should (equal (sotto--state-word '((state . "pending"))) "pending"))
  (should (equal (sotto--state-word '((state . "broken") (state_reason . "no GroupInfo at the relay")))
                 "broken: no GroupInfo at the relay"))
  (should (equal (sotto--state-word '((state . "broken"))) "broken")))

(ert-deftest sotto-07-list-and-ret-opens ()
  (let ((buf (sotto)))
    (should (equal (buffer-name buf) "*sotto*"))
    (should (derived-mode-p 'tabulated-list-mode))
    (goto-char (point-min))
    (should (search-forward sotto-test--conv nil t))
    (should (= 1 (sotto-test--count buf sotto-test--alice)))
    (execute-kbd-macro (kbd "RET"))
    (should (eq (current-buffer) (sotto-test--buffer)))))

(ert-deftest sotto-08-notification-elsewhere ()
  (let* ((seen nil)
         (sotto-notify-function (lambda (title body) (push (concat title " " body) seen))))
    (switch-to-buffer (sotto))
    (sotto-test--alice-send "e3 elsewhere")
    (sotto-test--wait "a notification"
                      (lambda () (seq-find (lambda (s) (string-match-p "e3 elsewhere" s)) seen)))
    (should (string-match-p (regexp-quote sotto-test--alice) (car seen)))))

(ert-deftest sotto-09-reconnect-no-gap-no-repeat ()
  (let ((buf (sotto-test--buffer)))
    (sotto-test--control "restart bob")
    (sotto-test--alice-send "e4 after restart")
    (sotto-test--wait "e4" (lambda () (= 1 (sotto-test--count buf "e4 after restart"))) 60)
    (sotto-test--control "stop bob")
    (sotto-test--alice-send "e5 while down")
    (sotto-test--control "start bob")
    (sotto-test--wait "e5" (lambda () (= 1 (sotto-test--count buf "e5 while down"))) 60)
    (dolist (text '("e1 history" "e2 live" "typed in emacs" "e3 elsewhere" "e4 after"))
      (should (= 1 (sotto-test--count buf text))))
    (sotto-send sotto-test--conv "after the restart")
    (sotto-test--wait "alice to receive it" (lambda () (sotto-test--alice-has "after the restart")))))

(ert-deftest sotto-095-a-timed-out-call-is-never-sent-later ()
  (sotto-test--control "stop bob")
  (let ((sotto-call-timeout 1))
    (should-error (sotto-call "message.send" `((conversation . ,sotto-test--conv)
                                               (text . "timed out, never sent")))
                  :type 'sotto-error))
  (sotto-test--control "start bob")
  (sotto-test--wait "a reconnect" (lambda () (ignore-errors (sotto-call "daemon.status"))) 60)
  (sotto-call "message.send" `((conversation . ,sotto-test--conv) (text . "sentinel e6")))
  (sotto-test--wait "alice to receive the sentinel" (lambda () (sotto-test--alice-has "sentinel e6")))
  (should-not (sotto-test--alice-has "timed out, never sent")))

(ert-deftest sotto-10-errors ()
  (let ((err (should-error (sotto-call "conversation.get" '((conversation . "no-such-conversation")))
                           :type 'sotto-error)))
    (should (equal (alist-get 'kind (nth 2 err)) "not_found"))))

(provide 'sotto-test)
;;; sotto-test.el ends here
