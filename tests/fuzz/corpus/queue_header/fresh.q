RELAY-QUEUE 1
id 6b1132a80feP6c8fSe948
arrival 1796289192
client 127.0.0.1
helo capture.example
auth -
body 8BITMIME
smtputf8 1
ret HDRS
envid abc+2Bdef
tenant acme
sender sender@example.org
next 0000000000 0000
delay-warned 0
hold 0
error                                                                                                                                                                                                         
rcpt P SUCCESS,FAILURE rfc822;one@cap.test one@cap.test
rcpt P - - two@cap.test
rcpt P NEVER - three@cap.test
rcpt P DELAY - four@other.test

Received: from capture.example (unknown [127.0.0.1])
	by relay.test (nginx-relay) with UTF8SMTP
	id 6b1132a80feP6c8fSe948; Thu, 03 Dec 2026 09:13:12 +0000
From: <sender@example.org>
To: <rcpt@example.test>
Subject: captured
Message-ID: <capture-marker@client.test>

body capture-marker

RELAY-END 00000000000000000878
