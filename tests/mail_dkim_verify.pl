#!/usr/bin/perl
# Verify the DKIM signatures of the message on stdin with Mail::DKIM.
# Arguments: NAME=TXT pairs, the DNS TXT records to serve (through
# Net::DNS::Resolver::Mock, no network). Prints one line per signature,
# "signature <result> d=<domain> s=<selector> <detail>", then
# "result <overall result>". Used by tests/mail_dkim.py.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS::Resolver::Mock;

my $zone = '';
for my $arg (@ARGV) {
    my ($name, $txt) = split /=/, $arg, 2;
    my @strings = map { '"' . $_ . '"' } ($txt =~ /(.{1,250})/gs);
    $zone .= "$name. 60 IN TXT @strings\n";
}
my $resolver = Net::DNS::Resolver::Mock->new();
$resolver->zonefile_parse($zone);
Mail::DKIM::DNS::resolver($resolver);

binmode STDIN;
my $dkim = Mail::DKIM::Verifier->new();
while (my $line = <STDIN>) {
    $line =~ s/\r?\n\z/\r\n/;
    $dkim->PRINT($line);
}
$dkim->CLOSE;
for my $signature ($dkim->signatures) {
    printf "signature %s d=%s s=%s %s\n", $signature->result,
        $signature->domain // '', $signature->selector // '',
        $signature->result_detail // '';
}
printf "result %s\n", $dkim->result;
