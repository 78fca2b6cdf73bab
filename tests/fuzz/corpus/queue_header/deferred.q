RELAY-QUEUE 1
id 6b1132a234aP6a1cSae8
arrival 1796289186
client 127.0.0.1
helo capture.example
auth -
body -
smtputf8 0
ret HDRS
envid abc+2Bdef
tenant acme
sender sender@example.org
next 1796292786 0001
delay-warned 0
hold 0
error <one@cap.test> 127.0.0.1[127.0.0.1]:1: 4.4.1 connect failed: Connection refused                                                                                                                         
rcpt P SUCCESS,FAILURE rfc822;one@cap.test one@cap.test
rcpt P - - two@cap.test
rcpt P NEVER - three@cap.test
rcpt P DELAY - four@other.test

Received: from capture.example (unknown [127.0.0.1])
	by relay.test (nginx-relay) with ESMTP
	id 6b1132a234aP6a1cSae8; Thu, 03 Dec 2026 09:13:06 +0000
From: <sender@example.org>
To: <rcpt@example.test>
Subject: captured
Message-ID: <capture-marker@client.test>

body capture-marker

RELAY-END 00000000000000000866
