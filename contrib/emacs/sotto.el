;;; sotto.el --- Sotto end-to-end encrypted messaging, a client of sottod  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The Sotto authors

;; Author: The Sotto authors
;; Maintainer: The Sotto authors
;; Version: 0.1.0
;; Package-Requires: ((emacs "27.1"))
;; Keywords: comm
;; URL: https://example.invalid/sotto
;; SPDX-License-Identifier: AGPL-3.0-or-later

;; This file is not part of GNU Emacs.

;;; Commentary:

;; A thin client of sottod, Sotto's per-user daemon: JSON-RPC over its Unix
;; socket (NDJSON), no dependencies.  The daemon holds the keys and the
;; message store; this package only talks to it.
;;
;;   M-x sotto            the conversation list (*sotto*: unread, name, kind,
;;                        state unless active, id), RET opens one
;;   (sotto-open CONV)    *sotto: NAME* with the history, live messages and
;;                        an input area at the bottom (RET sends)
;;   (sotto-send CONV TEXT)
;;
;; Messages in conversations you are not looking at raise a desktop
;; notification when `notifications-notify' works, else a message.  When the
;; daemon restarts, the package reconnects and resumes the event stream from
;; the last event it saw: nothing is missed, nothing is shown twice.
;; M-x customize-group RET sotto RET for the options.

;;; Code:

(require 'json)
(require 'subr-x)
(require 'tabulated-list)

(defgroup sotto nil
  "Sotto end-to-end encrypted messaging, through the sottod daemon."
  :group 'comm
  :prefix "sotto-")

(defcustom sotto-socket nil
  "The daemon's socket path, or nil for the daemon's default.
The default is resolved as the daemon does: $SOTTO_SOCKET if it is an
absolute path, else $XDG_RUNTIME_DIR/sotto/sottod.sock, else
/tmp/sotto-UID/sottod.sock."
  :type '(choice (const :tag "The daemon's default" nil) file))

(defcustom sotto-notify t
  "Whether messages in conversations not shown raise a notification."
  :type 'boolean)

(defcustom sotto-notify-function #'sotto-notify-default
  "Called with TITLE and BODY for a message in a conversation not shown."
  :type 'function)

(defcustom sotto-history-limit 200
  "How many messages `sotto-open' loads."
  :type 'integer)

(defcustom sotto-call-timeout 15
  "Seconds a synchronous call waits for the daemon."
  :type 'number)

(defface sotto-sender '((t :inherit font-lock-keyword-face))
  "Face of the sender in conversation buffers.")

(defface sotto-time '((t :inherit shadow))
  "Face of the time in conversation buffers.")

(defface sotto-prompt '((t :inherit minibuffer-prompt))
  "Face of the input prompt.")

;;;; The connection

(defvar sotto--process nil "The connection to the daemon.")
(defvar sotto--pending "" "A partial line received from the daemon.")
(defvar sotto--next-id 1 "The next request id.")
(defvar sotto--waiting (make-hash-table) "Request id -> callback.")
(defvar sotto--last-seq nil "The seq of the last event delivered.")
(defvar sotto--want-events nil "Whether events are wanted (resubscribe on reconnect).")
(defvar sotto--backoff 0.05 "Seconds before the next reconnect attempt.")
(defvar sotto--reconnect-timer nil "The pending reconnect, if any.")
(defvar sotto--queue nil "(ID . LINE) to write once connected, newest first.")
(defvar sotto--me nil "This account's address.")

(defun sotto-default-socket ()
  "The daemon's default socket path, by the daemon's own rule."
  (let ((override (or (getenv "SOTTO_SOCKET") ""))
        (runtime (or (getenv "XDG_RUNTIME_DIR") "")))
    (cond ((string-prefix-p "/" override) override)
          ((string-prefix-p "/" runtime)
           (expand-file-name "sotto/sottod.sock" runtime))
          (t (format "/tmp/sotto-%d/sottod.sock" (user-uid))))))

(defun sotto--socket ()
  "The socket to use."
  (or sotto-socket (sotto-default-socket)))

(defun sotto--get (key obj)
  "The value of KEY in the decoded JSON object OBJ."
  (alist-get key obj))

(defun sotto--connected-p ()
  "Whether the connection is open.
Reads what the daemon already sent first, so that a connection the daemon
closed is noticed before anything is written to it."
  (when (process-live-p sotto--process)
    (accept-process-output sotto--process 0 nil t))
  (and sotto--process (process-live-p sotto--process)))

(defun sotto--connect ()
  "Opens the connection if it is not open; returns non-nil when connected."
  (unless (sotto--connected-p)
    (setq sotto--pending "")
    (condition-case nil
        (let ((proc (make-network-process
                     :name "sotto" :family 'local :service (sotto--socket)
                     :coding 'binary :noquery t
                     :filter #'sotto--filter :sentinel #'sotto--sentinel)))
          (setq sotto--process proc
                sotto--backoff 0.05)
          (dolist (entry (reverse sotto--queue))
            (process-send-string proc (cdr entry)))
          (setq sotto--queue nil)
          (when sotto--want-events
            (sotto--subscribe)))
      (file-error (sotto--schedule-reconnect))))
  (sotto--connected-p))

(defun sotto--schedule-reconnect ()
  "Tries to connect again after a backoff."
  (unless sotto--reconnect-timer
    (setq sotto--reconnect-timer
          (run-at-time sotto--backoff nil
                       (lambda ()
                         (setq sotto--reconnect-timer nil)
                         (sotto--connect))))
    (setq sotto--backoff (min 2.0 (* 2 sotto--backoff)))))

(defun sotto--sentinel (proc _event)
  "Reconnects when PROC, the connection, went away."
  (unless (process-live-p proc)
    (when (eq proc sotto--process)
      (setq sotto--process nil)
      (let ((waiting sotto--waiting))
        (setq sotto--waiting (make-hash-table))
        (maphash (lambda (_id cb)
                   (funcall cb `((kind . "connection")
                                 (message . "lost the connection to sottod"))
                            nil))
                 waiting))
      (when sotto--want-events
        (message "sotto: sottod went away; reconnecting")
        (sotto--schedule-reconnect)))))

(defun sotto--filter (_proc string)
  "Splits STRING from the daemon into lines, keeping a partial last line."
  (setq sotto--pending (concat sotto--pending string))
  (let (nl)
    (while (setq nl (string-match-p "\n" sotto--pending))
      (let ((line (string-trim-right (substring sotto--pending 0 nl) "\r")))
        (setq sotto--pending (substring sotto--pending (1+ nl)))
        (unless (string-blank-p line)
          (sotto--dispatch line))))))

(defun sotto--decode (line)
  "Decodes LINE (UTF-8 bytes) as a JSON object; nil if it is not one."
  (let ((text (decode-coding-string line 'utf-8)))
    (condition-case nil
        (json-parse-string text :object-type 'alist :array-type 'list
                           :null-object nil :false-object :false)
      (json-error
       ;; The native parser refuses integers beyond 64 bits (a queued message's
       ;; position); json.el reads them as bignums.
       (condition-case nil
           (let ((json-object-type 'alist) (json-array-type 'list)
                 (json-key-type 'symbol) (json-null nil) (json-false :false))
             (json-read-from-string text))
         (error nil))))))

(defun sotto--dispatch (line)
  "Handles one LINE from the daemon."
  (let ((msg (sotto--decode line)))
    (when (consp msg)
      (if (equal (sotto--get 'method msg) "event")
          (let ((ev (sotto--get 'result (sotto--get 'params msg))))
            (when (consp ev)
              (sotto--event ev)))
        (let* ((id (sotto--get 'id msg))
               (cb (and id (gethash id sotto--waiting))))
          (when cb
            (remhash id sotto--waiting)
            (let ((err (sotto--get 'error msg)))
              (if err
                  (let ((data (sotto--get 'data err)))
                    (funcall cb `((code . ,(sotto--get 'code err))
                                  (kind . ,(sotto--get 'kind data))
                                  (message . ,(sotto--get 'message err))
                                  (data . ,data))
                             nil))
                (funcall cb nil (sotto--get 'result msg))))))))))

(defun sotto--encode (id method params)
  "One request line: ID, METHOD, PARAMS (an alist; nil is {})."
  (concat (encode-coding-string
           (json-serialize `((jsonrpc . "2.0") (id . ,id) (method . ,method)
                             (params . ,(or params (make-hash-table)))))
           'utf-8)
          "\n"))

(defun sotto--call (method params callback)
  "Calls METHOD with PARAMS; CALLBACK gets ERROR and RESULT when it answers."
  (let* ((id sotto--next-id)
         (line (sotto--encode id method params)))
    (setq sotto--next-id (1+ id))
    (when callback
      (puthash id callback sotto--waiting))
    (if (sotto--connect)
        (process-send-string sotto--process line)
      (push (cons id line) sotto--queue))
    id))

(defun sotto--forget (id)
  "Forgets request ID: never written if it is still queued, its answer ignored."
  (remhash id sotto--waiting)
  (setq sotto--queue (assq-delete-all id sotto--queue)))

(define-error 'sotto-error "Sotto error")

(defun sotto-call (method &optional params)
  "Calls METHOD with PARAMS (an alist) and waits; returns the result.
Signals `sotto-error' with the daemon's error (an alist of code, kind,
message and data)."
  (let ((done nil) (result nil) (error nil)
        (deadline (+ (float-time) sotto-call-timeout)))
    (let ((id (sotto--call method params
                           (lambda (err res) (setq done t error err result res)))))
      (while (and (not done) (< (float-time) deadline))
        (accept-process-output sotto--process 0.05))
      ;; A request still queued (the daemon is down) is dropped, not sent later.
      (unless done (sotto--forget id)))
    (cond ((not done)
           (signal 'sotto-error
                   (list (format "no answer from sottod to %s" method) '((kind . "timeout")))))
          (error (signal 'sotto-error (list (sotto--get 'message error) error)))
          (t result))))

(defun sotto--subscribe ()
  "Subscribes from the last seq seen (or live, from the daemon's last_event_seq)."
  (let ((subscribe
         (lambda ()
           (sotto--call "events.subscribe" `((since . ,sotto--last-seq))
                        (lambda (err _res)
                          (when err
                            (message "sotto: events.subscribe: %s"
                                     (sotto--get 'message err))))))))
    (if sotto--last-seq
        (funcall subscribe)
      (sotto--call "daemon.status" nil
                   (lambda (err status)
                     (unless err
                       (unless sotto--last-seq
                         (setq sotto--last-seq (sotto--get 'last_event_seq status)))
                       (funcall subscribe)))))))

(defun sotto-start-events ()
  "Starts the event stream (idempotent): live messages and notifications."
  (unless sotto--want-events
    (setq sotto--want-events t)
    (if (sotto--connected-p)
        (sotto--subscribe)
      (sotto--connect))))

(defun sotto-disconnect ()
  "Closes the connection and stops the event stream."
  (interactive)
  (setq sotto--want-events nil)
  (when sotto--reconnect-timer
    (cancel-timer sotto--reconnect-timer)
    (setq sotto--reconnect-timer nil))
  (when sotto--process
    (delete-process sotto--process)
    (setq sotto--process nil)))

;;;; Events

(defvar sotto--views (make-hash-table :test 'equal)
  "Conversation id -> its buffer.")

(defun sotto--event (ev)
  "Handles the event EV (once per seq)."
  (let ((type (sotto--get 'type ev))
        (seq (sotto--get 'seq ev)))
    (cond
     ((equal type "subscription.closed")
      ;; After an overflow, resubscribe from the last seq seen; on shutdown the
      ;; daemon closes the connection and the reconnect resubscribes.
      (unless (equal (sotto--get 'reason ev) "shutdown")
        (when (sotto--connected-p) (sotto--subscribe))))
     ((and (integerp seq) sotto--last-seq (<= seq sotto--last-seq)))
     (t
      (when (integerp seq) (setq sotto--last-seq seq))
      (pcase type
        ((or "message.received" "message.created")
         (let* ((m (sotto--get 'message ev))
                (conv (sotto--get 'conversation m))
                (buf (gethash conv sotto--views)))
           (when (buffer-live-p buf)
             (sotto--insert-message buf m))
           (when (and (equal type "message.received") sotto-notify
                      (not (and (buffer-live-p buf) (eq buf (window-buffer (selected-window))))))
             (funcall sotto-notify-function
                      (format "Sotto: %s" (sotto--get 'sender m))
                      (or (sotto--get 'text m) "")))
           (sotto--refresh-list-later)))
        ((pred (string-prefix-p "conversation."))
         (sotto--refresh-list-later)))))))

(defun sotto-notify-default (title body)
  "A desktop notification with TITLE and BODY, else a message."
  (unless (and (require 'notifications nil t)
               (fboundp 'notifications-notify)
               ;; No session bus (a console, a batch run): fall back to `message'.
               (let ((debug-on-error nil))
                 (ignore-errors
                   (notifications-notify :title title :body body :app-name "sotto"))))
    (message "%s: %s" title body)))

;;;; The conversation list

(defun sotto--title (conv)
  "The name of CONV, or for an unnamed one the first peer's address."
  (let ((name (sotto--get 'name conv)))
    (if (and (stringp name) (not (string-empty-p name)))
        name
      (or (seq-find (lambda (a) (not (equal a sotto--me)))
                    (sotto--get 'members conv))
          (sotto--get 'id conv)))))

(defun sotto--whoami ()
  "This account's address (cached)."
  (or sotto--me
      (setq sotto--me (sotto--get 'address (sotto--get 'account (sotto-call "daemon.status"))))))

(defvar sotto-list-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "RET") #'sotto-list-open)
    (define-key map (kbd "g") #'revert-buffer)
    map)
  "Keys of the conversation list.")

(define-derived-mode sotto-list-mode tabulated-list-mode "Sotto"
  "The Sotto conversation list.  RET opens the conversation at point."
  (setq tabulated-list-format [("Unread" 6 t :right-align t) ("Name" 40 t) ("Kind" 7 t)
                               ("State" 10 t) ("Id" 0 t)])
  (setq tabulated-list-padding 1)
  (add-hook 'tabulated-list-revert-hook #'sotto--fill-list nil t)
  (tabulated-list-init-header))

(defun sotto--state-word (conv)
  "CONV's state when it is not the usual active one, else the empty string.
A broken conversation says why: \"broken: \" and the daemon's state_reason."
  (let ((state (sotto--get 'state conv))
        (reason (sotto--get 'state_reason conv)))
    (cond ((or (null state) (equal state "active")) "")
          ((and (equal state "broken") (stringp reason) (not (string-empty-p reason)))
           (concat "broken: " reason))
          (t state))))

(defun sotto--fill-list (&optional convs)
  "Fills `tabulated-list-entries' from CONVS (default: ask the daemon)."
  (sotto--whoami)
  (setq tabulated-list-entries
        (mapcar (lambda (c)
                  (let ((unread (sotto--get 'unread c)))
                    (list (sotto--get 'id c)
                          (vector (if (and (integerp unread) (> unread 0)) (number-to-string unread) "")
                                  (sotto--title c)
                                  (or (sotto--get 'kind c) "")
                                  (sotto--state-word c)
                                  (sotto--get 'id c)))))
                (or convs (sotto-call "conversation.list")))))

(defun sotto--refresh-list-later ()
  "Refreshes *sotto*, if it exists, when the daemon answers."
  (let ((buf (get-buffer "*sotto*")))
    (when (buffer-live-p buf)
      (sotto--call "conversation.list" nil
                   (lambda (err convs)
                     (when (and (not err) (buffer-live-p buf))
                       (with-current-buffer buf
                         (sotto--fill-list (or convs (list)))
                         (tabulated-list-print t))))))))

;;;###autoload
(defun sotto ()
  "Show the Sotto conversation list in *sotto*."
  (interactive)
  (sotto-start-events)
  (let ((buf (get-buffer-create "*sotto*")))
    (with-current-buffer buf
      (sotto-list-mode)
      (sotto--fill-list)
      (tabulated-list-print))
    (switch-to-buffer buf)
    buf))

(defun sotto-list-open ()
  "Open the conversation at point."
  (interactive)
  (let ((id (tabulated-list-get-id)))
    (if id (sotto-open id) (user-error "No conversation here"))))

;;;; A conversation

(defvar-local sotto--conversation nil "The id of this buffer's conversation.")
(defvar-local sotto--seen nil "Message ids shown in this buffer.")
(defvar-local sotto--insert-marker nil "Where the next message goes.")
(defvar-local sotto--input-marker nil "Where the input area starts.")

(defvar sotto-chat-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map (kbd "RET") #'sotto-chat-send-input)
    map)
  "Keys of a conversation buffer.")

(define-derived-mode sotto-chat-mode fundamental-mode "Sotto-Chat"
  "A Sotto conversation: history above, input at the bottom; RET sends."
  (setq-local sotto--seen (make-hash-table :test 'equal))
  (setq buffer-undo-list t))

(defun sotto--format-message (m)
  "The text of message M in a conversation buffer."
  (let* ((time (or (sotto--get 'sent_at m) (sotto--get 'received_at m) ""))
         (hhmm (if (string-match "T\\([0-9][0-9]:[0-9][0-9]\\)" time) (match-string 1 time) time))
         (state (sotto--get 'state m)))
    (concat (propertize (format "[%s] " hhmm) 'face 'sotto-time)
            (propertize (format "%s" (sotto--get 'sender m)) 'face 'sotto-sender)
            ": " (or (sotto--get 'text m) "")
            (if (equal state "failed") "  [failed]" "")
            "\n")))

(defun sotto--insert-message (buf m)
  "Inserts message M into BUF once, above the input area, moving no reader's point."
  (with-current-buffer buf
    (let ((id (sotto--get 'id m))
          (kind (sotto--get 'kind m)))
      (when (and (not (and id (gethash id sotto--seen)))
                 (or (null kind) (equal kind "text")))
        (when id (puthash id t sotto--seen))
        (let ((inhibit-read-only t))
          (save-excursion
            (goto-char sotto--insert-marker)
            (insert (propertize (sotto--format-message m)
                                'read-only t 'front-sticky t 'rear-nonsticky t))))))))

(defun sotto--resolve (conv)
  "The conversation object for CONV (an id, an address or a name)."
  (sotto-call "conversation.get" `((conversation . ,conv))))

;;;###autoload
(defun sotto-open (conv)
  "Open conversation CONV (an id, a peer's address or a unique name).
The buffer is *sotto: NAME*, NAME the conversation's name or, for a direct
one, the peer's address; it shows the history and live messages, with an
input area at the bottom where RET sends."
  (interactive (list (read-string "Conversation (id, address or name): ")))
  (sotto-start-events)
  (sotto--whoami)
  (let* ((c (sotto--resolve conv))
         (id (sotto--get 'id c))
         (existing (gethash id sotto--views)))
    (if (buffer-live-p existing)
        (progn (switch-to-buffer existing) existing)
      (let ((buf (generate-new-buffer (format "*sotto: %s*" (sotto--title c)))))
        (puthash id buf sotto--views)
        (with-current-buffer buf
          (sotto-chat-mode)
          (setq sotto--conversation id)
          (let ((inhibit-read-only t))
            (setq sotto--insert-marker (point-min-marker))
            (insert (propertize "> " 'face 'sotto-prompt 'read-only t
                                'front-sticky t 'rear-nonsticky t))
            (set-marker-insertion-type sotto--insert-marker nil)
            (setq sotto--input-marker (point-marker)))
          (dolist (m (sotto-call "message.list"
                                 `((conversation . ,id) (limit . ,sotto-history-limit))))
            (sotto--insert-message buf m))
          (goto-char (point-max))
          (add-hook 'kill-buffer-hook
                    (lambda () (remhash id sotto--views)) nil t))
        ;; Mark it read where the daemon supports it.
        (sotto--call "conversation.mark_read" `((conversation . ,id)) #'ignore)
        (switch-to-buffer buf)
        buf))))

(defun sotto-chat-send-input ()
  "Send the text of the input area."
  (interactive)
  (let ((text (string-trim (buffer-substring-no-properties sotto--input-marker (point-max)))))
    (unless (string-empty-p text)
      (sotto-send sotto--conversation text)
      (delete-region sotto--input-marker (point-max)))))

;;;###autoload
(defun sotto-send (conv text)
  "Send TEXT to conversation CONV (an id, a peer's address or a unique name).
Asynchronous: returns once the request is written; a failure is reported
with `message'."
  (interactive
   (list (or sotto--conversation (read-string "Conversation: "))
         (read-string "Message: ")))
  (when (string-empty-p text)
    (user-error "Nothing to send"))
  (sotto--call "message.send" `((conversation . ,conv) (text . ,text))
               (lambda (err m)
                 (if err
                     (message "sotto: sending failed: %s" (sotto--get 'message err))
                   (let ((buf (gethash (sotto--get 'conversation m) sotto--views)))
                     (when (buffer-live-p buf)
                       (sotto--insert-message buf m))))))
  nil)

(provide 'sotto)
;;; sotto.el ends here
